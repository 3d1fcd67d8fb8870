"""A private Postfix (Debian's package) for interoperation tests, on 127.0.0.1:<port>.

:class:`PostfixInstance` writes its own config_directory, queue and log in
a temporary directory and runs ``postfix -c DIR start``: Postfix's master
then listens on 127.0.0.1:<free port> only, never on port 25, and Debian's
own Postfix service stays untouched (scripts/test-deps installs the
package without configuring or starting it).

Mail for ``pf.test`` is delivered by Postfix's virtual(8) agent into
Maildirs under ``vmail/`` (``bob@pf.test`` -> ``vmail/bob/``); other
routes come from ``transport`` (a dict for an inline: table, e.g. sending
``pp.test`` to postpy).  Postfix's master must start as root, so these
tests need root; as an ordinary user they are skipped with that reason.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import IS_ROOT, free_port, wait_for

POSTFIX = shutil.which("postfix") or next(
    (p for p in ("/usr/sbin/postfix",) if os.access(p, os.X_OK)), None)
SMTP_SOURCE = shutil.which("smtp-source") or next(
    (p for p in ("/usr/sbin/smtp-source",) if os.access(p, os.X_OK)), None)


def unavailable() -> str:
    """Why the Postfix interop tests cannot run here ("" when they can)."""
    if not IS_ROOT:
        return "Postfix's master must be started as root"
    if POSTFIX is None:
        return "postfix is not installed (scripts/test-deps installs it)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the postfix user does not exist (install the postfix package)"
    return ""


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
tlsmgr    unix - - n 1000? 1 tlsmgr
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixInstance:
    def __init__(self, transport: dict[str, str] | None = None, **params: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="postpy-postfix-"))
        os.chmod(self.base, 0o755)
        self.config_dir = self.base / "etc"
        self.vmail = self.base / "vmail"
        self.log_path = self.base / "maillog"
        self.port = free_port()
        for sub in ("etc", "queue", "data", "vmail"):
            (self.base / sub).mkdir()
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.base / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.vmail, nobody.pw_uid, nobody.pw_gid)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.base / "queue"),
            "data_directory": str(self.base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "pf.test", "mydomain": "pf.test", "myorigin": "pf.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": str(self.log_path), "maillog_file_prefixes": str(self.base),
            "alias_maps": "", "alias_database": "", "local_recipient_maps": "",
            "virtual_mailbox_domains": "pf.test",
            "virtual_mailbox_base": str(self.vmail),
            "virtual_mailbox_maps": "inline:{bob@pf.test=bob/}",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "biff": "no", "smtputf8_enable": "yes",
            "smtp_tls_security_level": "none",
            "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
        }
        if transport:
            main["transport_maps"] = "inline:{" + ", ".join(f"{k}={v}" for k, v in transport.items()) + "}"
        main.update(params)
        (self.config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.config_dir / "master.cf").write_text(MASTER_CF.replace("{port}", str(self.port)))

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert POSTFIX
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> PostfixInstance:
        done = self.postfix("start")
        if done.returncode != 0:
            raise AssertionError(f"postfix start failed ({done.returncode}): {done.stderr}\n{self.log()}")
        wait_for(lambda: "daemon started" in self.log(), 20, "Postfix master to start")
        return self

    def stop(self) -> None:
        self.postfix("stop")
        pid_file = self.base / "queue" / "pid" / "master.pid"
        try:
            wait_for(lambda: not pid_file.exists() or not _alive(pid_file), 20, "Postfix master to stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        regex = re.compile(pattern)
        try:
            found = wait_for(lambda: regex.search(self.log()), timeout, f"Postfix log line /{pattern}/")
        except AssertionError as exc:
            tail = "\n".join(self.log().splitlines()[-20:])
            raise AssertionError(f"{exc}\n--- Postfix maillog tail ---\n{tail}") from None
        assert isinstance(found, re.Match)
        return found

    def maildir(self, user: str = "bob") -> list[bytes]:
        new = self.vmail / user / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
        return True
    except (OSError, ValueError, IndexError):
        return False
