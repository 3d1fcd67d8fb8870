"""A real Cyrus IMAP server (cyrus-imapd) on a temporary tree, for the lmtp tests.

:func:`start_cyrus` writes an imapd.conf and a cyrus.conf into a temporary
directory owned by the ``cyrus`` user (configdirectory, the mail partition
and the sockets all there, never the system's /etc/imapd.conf or
/var/spool/cyrus) and runs Cyrus's ``master`` in the foreground: it starts
as root and drops to ``cyrus`` itself.  Services: ``lmtpd`` on a unix socket
(mode 0666: postpy's lmtp agent reaches it as mail_owner; Cyrus treats a
unix-socket LMTP client as trusted, no AUTH) and ``imapd`` on a loopback
port.  Passwords are not checked (``sasl_pwcheck_method: alwaystrue``), so a
test logs in as any user with Python's imaplib: as the admin ``cyrus`` to
create mailboxes, as the user to list what Cyrus delivered.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import peer_process

CYRUS_BIN = Path("/usr/lib/cyrus/bin")
ADMIN = "cyrus"


def available() -> str:
    """Empty when Cyrus can be started here, else why not."""
    if os.geteuid() != 0:
        return "Cyrus's master must be started as root (it drops to the cyrus user)"
    for program in ("master", "lmtpd", "imapd", "ctl_cyrusdb"):
        if not os.access(CYRUS_BIN / program, os.X_OK):
            return f"{CYRUS_BIN / program} is not installed (cyrus-imapd)"
    try:
        pwd.getpwnam("cyrus")
    except KeyError:
        return "no cyrus user (cyrus-common creates it)"
    return ""


class Cyrus:
    def __init__(self, base: Path, imap_port: int) -> None:
        self.base = base
        self.imap_port = imap_port
        self.socket_path = str(base / "socket" / "lmtp")
        self.conf = base / "imapd.conf"
        self.log_path = base / "master.log"
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("config", "spool", "socket"):
            (base / sub).mkdir()
        self.conf.write_text(f"""\
configdirectory: {base}/config
partition-default: {base}/spool
defaultpartition: default
lmtpsocket: {self.socket_path}
idlesocket: {base}/socket/idle
notifysocket: {base}/socket/notify
servername: cyrus.test
admins: {ADMIN}
unixhierarchysep: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN
allowplaintext: yes
syslog_prefix: postpy-test-cyrus
""")
        (base / "cyrus.conf").write_text(f"""\
START {{
  recover cmd="ctl_cyrusdb -r -C {self.conf}"
}}
SERVICES {{
  imap cmd="imapd -C {self.conf}" listen="127.0.0.1:{imap_port}" prefork=0
  lmtpunix cmd="lmtpd -C {self.conf}" listen="{self.socket_path}" prefork=0
}}
EVENTS {{
}}
""")
        owner = pwd.getpwnam("cyrus")
        for path in (base, *base.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        os.chmod(base, 0o755)

    def start(self, timeout: float = 30.0) -> Cyrus:
        self.proc = peer_process.start(
            [str(CYRUS_BIN / "master"), "-C", str(self.conf), "-M", str(self.base / "cyrus.conf"),
             "-p", str(self.base / "master.pid"), "-D", "-L", str(self.log_path)],
            self._greets, "cyrus master", timeout=timeout)
        return self

    def _greets(self) -> bool:
        if not peer_process.lmtp_greets(str(self.socket_path)):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.imap_port), 5) as t:
                return t.recv(512).startswith(b"* OK")
        except OSError:
            return False

    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        client.login(user, "any password")
        return client

    def create_mailbox(self, name: str) -> None:
        """``user/bob`` (``unixhierarchysep``), created by the admin over IMAP."""
        client = self.imap(ADMIN)
        try:
            typ, data = client.create(name)
            if typ != "OK":
                raise RuntimeError(f"CREATE {name}: {data!r}")
        finally:
            client.logout()

    def subjects(self, user: str, mailbox: str = "INBOX") -> list[str]:
        """The Subject header of each message Cyrus lists in the user's mailbox."""
        client = self.imap(user)
        try:
            typ, _ = client.select(mailbox, readonly=True)
            if typ != "OK":
                return []
            typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            if typ != "OK":
                return []
            return [part[1].decode().strip() for part in data if isinstance(part, tuple)]
        finally:
            client.logout()

    def stop(self) -> None:
        peer_process.stop(self.proc)
        self.proc = None


def start_cyrus(imap_port: int) -> Cyrus:
    base = Path(tempfile.mkdtemp(prefix="postpy-cyrus-"))
    try:
        return Cyrus(base, imap_port).start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def remove(cyrus: Cyrus) -> None:
    cyrus.stop()
    shutil.rmtree(cyrus.base, ignore_errors=True)
