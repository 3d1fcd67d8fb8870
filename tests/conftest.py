"""Shared fixtures: a real postpy system on a temporary tree.

``mta`` is a started system (real master, real daemons, smtpd on a free
loopback port); ``mta_factory(master_cf=..., **main_cf)`` starts one with
other settings.  Everything waits with deadlines, never bare sleeps.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IS_ROOT = os.geteuid() == 0
MAIL_OWNER = "postpy"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll until predicate() is truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def ensure_system_users() -> None:
    """As root: the mail_owner user and postdrop group the daemons need."""
    if not IS_ROOT:
        return
    subprocess.run(["sh", str(ROOT / "scripts" / "create-users")], check=True)


def as_user(user: pwd.struct_passwd, action: Callable[[], object]) -> str:
    """Run ``action()`` in a forked child with ``user``'s ids; its result as
    text, or ``"FAILED: <exception>"``.

    A fork rather than a new interpreter: the test's Python may live where
    other users cannot reach it (e.g. under /root).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_end, str(action()).encode())
            status = 0
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    out = os.read(read_end, 4000).decode()
    os.close(read_end)
    return ("" if status == 0 else "FAILED: ") + out


class MTA:
    def __init__(self, base: Path, master_cf: str | None, params: dict[str, str]) -> None:
        self.base = base
        self.config_dir = base / "etc"
        self.queue_dir = base / "spool"
        self.log_path = base / "maillog"
        self.port = free_port()
        self.config_dir.mkdir(parents=True)
        (base / "mail").mkdir()
        os.chmod(base / "mail", 0o1777)
        main = {
            "queue_directory": str(self.queue_dir),
            "maillog_file": str(self.log_path),
            "myhostname": "mx.test.example",
            "mydestination": "$myhostname, localhost, test.example",
            "inet_interfaces": "127.0.0.1",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": f"lmdb:{self.config_dir}/aliases",
            "alias_database": f"lmdb:{self.config_dir}/aliases",
            "mail_spool_directory": str(base / "mail"),   # never the host's /var/mail
            "service_throttle_time": "5s",
            "max_idle": "30s",
        }
        main.update(params)
        self.write_main_cf(main)
        if master_cf is None:
            master_cf = (ROOT / "etc" / "master.cf").read_text()
        master_cf = master_cf.replace("127.0.0.1:2525", f"127.0.0.1:{self.port}").replace("{port}", str(self.port))
        (self.config_dir / "master.cf").write_text(master_cf)
        self.write_aliases("postmaster: root\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def write_aliases(self, text: str) -> None:
        """Write etc/aliases and build aliases.lmdb with the real postalias."""
        path = self.config_dir / "aliases"
        path.write_text(text)
        subprocess.run([str(BIN / "postalias"), str(path)], check=True, capture_output=True, timeout=30)

    def write_main_cf(self, params: dict[str, str]) -> None:
        self.params = dict(params)
        text = "".join(f"{k} = {v}\n" for k, v in params.items())
        (self.config_dir / "main.cf").write_text(text)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.config_dir)
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        return env

    def run(self, cmd: str, *args: str, input: bytes | str | None = None, timeout: float = 30,
            user: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / cmd), *args]
        kwargs: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        data = input.decode("utf-8", "surrogateescape") if isinstance(input, bytes) else input
        return subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout,
                              env=self.env(), check=check, **kwargs)  # type: ignore[call-overload]

    def start(self) -> MTA:
        self.proc = subprocess.Popen([str(BIN / "postpy"), "start-fg"], env=self.env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(lambda: self.log_path.exists() and "daemon started" in self.log_path.read_text()
                 or self.proc.poll() is not None, 20, "master to start")
        if self.proc.poll() is not None:
            out = self.proc.stdout.read().decode() if self.proc.stdout else ""
            raise AssertionError(f"master failed to start:\n{out}\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # anything left behind
        except ProcessLookupError:
            pass
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        try:
            found = wait_for(lambda: regex.search(self.log()), timeout, f"log line /{pattern}/")
        except AssertionError as exc:
            tail = "\n".join(self.log().splitlines()[-30:])
            raise AssertionError(f"{exc}\n--- maillog tail ---\n{tail}") from None
        assert isinstance(found, re.Match)
        return found

    def queue_ids(self, queue: str) -> list[str]:
        path = self.queue_dir / queue
        return sorted(n for n in os.listdir(path) if not n.startswith(".")) if path.exists() else []

    def master_pid(self) -> int:
        return int((self.queue_dir / "pid" / "master.pid").read_text().strip())

    def children(self) -> dict[int, str]:
        """pid -> command line of master's children."""
        out = subprocess.run(["ps", "-ww", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
        master = self.master_pid()
        result = {}
        for line in out.splitlines():
            pid, ppid, args = line.strip().split(None, 2)
            if int(ppid) == master:
                result[int(pid)] = args
        return result


@pytest.fixture(scope="session")
def system_users() -> None:
    ensure_system_users()


@pytest.fixture
def mta_factory(system_users: None) -> Iterator[Callable[..., MTA]]:
    made: list[MTA] = []
    bases: list[Path] = []

    def make(master_cf: str | None = None, start: bool = True, **params: str) -> MTA:
        base = Path(tempfile.mkdtemp(prefix="postpy-test-"))
        os.chmod(base, 0o755)   # daemons that dropped privileges must reach it
        bases.append(base)
        mta = MTA(base, master_cf, params)
        made.append(mta)
        return mta.start() if start else mta

    yield make
    for mta in made:
        mta.stop()
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mta(mta_factory: Callable[..., MTA]) -> MTA:
    return mta_factory()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A scratch directory every uid may write (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="postpy-shared-"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def area() -> Iterator[Path]:
    """Homes, spool and scratch files every uid can reach."""
    path = Path(tempfile.mkdtemp(prefix="postpy-local-it-"))
    os.chmod(path, 0o755)
    for sub, mode in (("home", 0o755), ("mail", 0o775), ("shared", 0o1777)):
        (path / sub).mkdir()
        os.chmod(path / sub, mode)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unix_users(area: Path) -> Iterator[Callable[[], pwd.struct_passwd]]:
    created: list[str] = []

    def make() -> pwd.struct_passwd:
        name = "pt" + secrets.token_hex(4)
        home = area / "home" / name
        subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", "-U", name],
                       check=True, capture_output=True)
        created.append(name)
        os.chmod(home, 0o755)
        return pwd.getpwnam(name)

    yield make
    for name in created:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
