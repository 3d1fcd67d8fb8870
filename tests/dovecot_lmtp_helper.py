"""A real Dovecot LMTP server with virtual users, quota and Sieve, for the lmtp tests.

:func:`start_dovecot_lmtp` writes a dovecot.conf into a temporary tree
(base_dir, state, logs and the mailboxes there too) that runs only the LMTP
service: a unix socket (mode 0666, so postpy's lmtp agent reaches it as
mail_owner) and optionally a loopback TCP port.  Users come from a
passwd-file (userdb and passdb); every mailbox belongs to the ``mail``
user, as virtual mailboxes do.  The quota plugin is on (a user's
``quota`` sets their limit) and Pigeonhole's Sieve runs for users that have
a script.  Rejections and other mail Sieve sends go to ``submission_host``
(postpy's smtpd in the tests).

Dovecot's IMAP server is not installed here (it conflicts with Cyrus), so
mailboxes are read with ``doveadm`` against the same configuration
(:meth:`DovecotLmtp.fetch`), which is what IMAP would show.
:mod:`tests.dovecot_helper` has the auth-only server for SMTP AUTH.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import peer_process
from dovecot_helper import available as dovecot_available

DOVEADM = "/usr/bin/doveadm"
SIEVE_PLUGIN = "/usr/lib/dovecot/modules/lib90_sieve_plugin.so"
VMAIL = "mail"             # owner of every virtual mailbox


def available() -> str:
    """Empty when Dovecot LMTP with Sieve can be started here, else why not."""
    why = dovecot_available()
    if why:
        return why
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        return "dovecot-lmtpd is not installed"
    if not os.path.exists(SIEVE_PLUGIN):
        return "dovecot-sieve is not installed"
    if not os.access(DOVEADM, os.X_OK):
        return f"{DOVEADM} is not installed"
    return ""


@dataclass
class User:
    name: str                  # user@domain
    password: str = "secret"
    quota: str = "10M"         # Dovecot quota_rule storage limit
    sieve: str = ""            # the user's active Sieve script, if any


class DovecotLmtp:
    def __init__(self, base: Path, users: list[User], submission_host: str = "",
                 tcp_port: int = 0, hostname: str = "lmtp.test", socket_path: str = "",
                 socket_user: str = "", extra: str = "") -> None:
        self.base = base
        self.socket_path = socket_path or str(base / "lmtp")
        self.tcp_port = tcp_port
        self.log_path = base / "dovecot.log"
        self.conf_path = base / "dovecot.conf"
        self.vmail = base / "vmail"
        self.proc: subprocess.Popen[bytes] | None = None
        owner = pwd.getpwnam(VMAIL)
        for sub in ("run", "state"):
            (base / sub).mkdir()
        self.vmail.mkdir()
        os.chown(self.vmail, owner.pw_uid, owner.pw_gid)
        lines = []
        for user in users:
            local, _, domain = user.name.partition("@")
            home = self.home(user.name)
            home.mkdir(parents=True, exist_ok=True)
            if user.sieve:
                (home / "sieve").mkdir()
                (home / "sieve" / "main.sieve").write_text(user.sieve)
                (home / ".dovecot.sieve").symlink_to("sieve/main.sieve")
            for path in (self.vmail / domain, home, *home.rglob("*")):
                os.lchown(path, owner.pw_uid, owner.pw_gid)
            lines.append(f"{user.name}:{{PLAIN}}{user.password}::::::"
                         f"userdb_quota_rule=*:storage={user.quota}\n")
        users_file = base / "users"
        users_file.write_text("".join(lines))
        os.chmod(users_file, 0o644)
        inet = (f"  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {tcp_port}\n  }}\n"
                if tcp_port else "")
        submission = f"submission_host = {submission_host}\n" if submission_host else ""
        # The socket: mode 0666 in our own tree, or 0600 for socket_user (postpy's
        # mail_owner) when it is private/dovecot-lmtp inside postpy's queue directory.
        listener = f"    user = {socket_user}\n    mode = 0600\n" if socket_user else "    mode = 0666\n"
        self.conf_path.write_text(f"""\
base_dir = {base}/run
state_dir = {base}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = lmtp
listen = 127.0.0.1
ssl = no
hostname = {hostname}
shutdown_clients = yes
first_valid_uid = {owner.pw_uid}
mail_uid = {owner.pw_uid}
mail_gid = {owner.pw_gid}
mail_location = maildir:~/Maildir
mail_plugins = $mail_plugins quota
lda_mailbox_autocreate = yes
postmaster_address = postmaster@{hostname}
{submission}{extra}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
  default_fields = home={self.vmail}/%d/%n
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  quota = maildir:User quota
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
service lmtp {{
  unix_listener {self.socket_path} {{
{listener}  }}
{inet}}}
""")

    def home(self, user: str) -> Path:
        local, _, domain = user.partition("@")
        return self.vmail / domain / local

    def start(self, timeout: float = 20.0) -> DovecotLmtp:
        self.proc = peer_process.start(["/usr/sbin/dovecot", "-F", "-c", str(self.conf_path)],
                                       lambda: peer_process.lmtp_greets(str(self.socket_path)),
                                       "dovecot", timeout=timeout, describe=self.log)
        return self


    # -- reading the mailboxes (what IMAP would show) ---------------------------------
    def doveadm(self, *args: str, timeout: float = 30) -> str:
        done = subprocess.run([DOVEADM, "-c", str(self.conf_path), *args], capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr}{done.stdout}")
        return done.stdout

    def fetch(self, user: str, mailbox: str = "INBOX", field: str = "hdr") -> list[str]:
        """Each message of ``mailbox`` (``field``: hdr, body, text), in order."""
        out = self.doveadm("fetch", "-u", user, field, "mailbox", mailbox)
        return [part for part in out.split("\f\n") if part.strip()]

    def mailboxes(self, user: str) -> list[str]:
        return self.doveadm("mailbox", "list", "-u", user).split()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        peer_process.stop(self.proc)
        self.proc = None


def start_dovecot_lmtp(users: list[User], submission_host: str = "", tcp_port: int = 0,
                       hostname: str = "lmtp.test", socket_path: str = "", socket_user: str = "",
                       extra: str = "") -> DovecotLmtp:
    """``socket_path``: where the LMTP socket goes (default: in the temporary tree);
    ``extra``: more dovecot.conf lines (e.g. ``quota_full_tempfail = yes``)."""
    base = Path(tempfile.mkdtemp(prefix="postpy-dovecot-lmtp-"))
    os.chmod(base, 0o755)       # the lmtp agent (mail_owner) must reach the socket
    try:
        return DovecotLmtp(base, users, submission_host, tcp_port, hostname, socket_path,
                           socket_user, extra).start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def remove(dovecot: DovecotLmtp) -> None:
    dovecot.stop()
    shutil.rmtree(dovecot.base, ignore_errors=True)
