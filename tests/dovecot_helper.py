"""A real Dovecot auth server for the SMTP AUTH tests.

:func:`start_dovecot` writes a dovecot.conf into a temporary directory
(base_dir, state and logs there too), with no mail listeners at all: only
the auth service and its client socket (mode 0666, so smtpd can reach it
after dropping to mail_owner), users from a passwd-file, a static userdb.
Debian's ``/usr/sbin/dovecot`` runs it in the foreground (``-F``) as root;
:meth:`Dovecot.stop` ends it.  Tests skip when not root or when Dovecot is
not installed (``scripts/test-deps`` installs dovecot-core).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import peer_process

DOVECOT = "/usr/sbin/dovecot"


def available() -> str:
    """Empty when a real Dovecot can be started here, else why not."""
    if os.geteuid() != 0:
        return "Dovecot must be started as root"
    if not os.access(DOVECOT, os.X_OK):
        return f"{DOVECOT} is not installed (scripts/test-deps installs dovecot-core)"
    return ""


class Dovecot:
    def __init__(self, base: Path, users: dict[str, str], failure_delay: str = "0") -> None:
        self.base = base
        self.socket_path = str(base / "auth-client")
        self.log_path = base / "dovecot.log"
        self.conf_path = base / "dovecot.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        (base / "run").mkdir()
        (base / "state").mkdir()
        passwd = base / "users"
        passwd.write_text("".join(f"{user}:{{PLAIN}}{pw}\n" for user, pw in users.items()))
        os.chmod(passwd, 0o644)     # dovecot's auth-worker reads it as $default_internal_user
        self.conf_path.write_text(f"""\
base_dir = {base}/run
state_dir = {base}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols =
ssl = no
shutdown_clients = yes
auth_mechanisms = plain login
auth_failure_delay = {failure_delay}
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={os.getuid()} gid={os.getgid()} home=/tmp
}}
service auth {{
  unix_listener auth-client {{
    path = {self.socket_path}
    mode = 0666
  }}
}}
""")

    def start(self, timeout: float = 20.0) -> Dovecot:
        self.proc = peer_process.start([DOVECOT, "-F", "-c", str(self.conf_path)], self._answers,
                                       "dovecot", timeout=timeout, describe=self.log)
        return self

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.socket_path)
                s.sendall(b"VERSION\t1\t1\nCPID\t1\n")
                data = b""
                while b"DONE\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        peer_process.stop(self.proc)
        self.proc = None


def start_dovecot(users: dict[str, str], failure_delay: str = "0") -> Dovecot:
    base = Path(tempfile.mkdtemp(prefix="postpy-dovecot-"))
    os.chmod(base, 0o755)       # smtpd (mail_owner) must reach the socket
    try:
        return Dovecot(base, users, failure_delay).start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def remove(dovecot: Dovecot) -> None:
    dovecot.stop()
    shutil.rmtree(dovecot.base, ignore_errors=True)
