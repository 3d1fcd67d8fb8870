"""Shared machinery of the benchmarks: two systems side by side, one load, figures.

Every benchmark in this directory measures postpy and Postfix in the same
run on the same machine and prints the ratio, because the build machines
are shared and absolute numbers drift.  This module starts the systems
and drives them:

- :func:`postpy_system` starts a real postpy (tests/conftest.py's ``MTA``:
  real master, real daemons) on a temporary tree, smtpd on a free
  127.0.0.1 port;
- :func:`postfix_system` starts a private Postfix from Debian's package
  (tests/integration/postfixpeer.py's ``PostfixInstance``: its own
  config_directory, queue_directory and log, 127.0.0.1 only, never port 25);
- ``accept_only=True`` leaves qmgr out of master.cf for both, so mail is
  accepted into ``incoming/`` and never delivered; a :class:`TriggerSink`
  answers cleanup's "new mail" wake-up on ``public/qmgr`` so neither
  system pays for a failed wake-up (Postfix would log a warning per message),
  and Postfix gets ``in_flow_delay = 0s`` (its inflow throttle waits for
  tokens that only qmgr hands out);
- :func:`smtp_source` runs Postfix's C load generator; :func:`python_load`
  is a stdlib asyncio client that also times every transaction.

Postfix's master must start as root; without root (or without the
package) the Postfix side is skipped with the reason and only postpy is
measured.  Everything listens on 127.0.0.1 and stops before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from conftest import IS_ROOT, MTA, ensure_system_users, wait_for  # noqa: E402
from postfixpeer import MASTER_CF as POSTFIX_MASTER_CF  # noqa: E402
from postfixpeer import SMTP_SOURCE, PostfixInstance, unavailable  # noqa: E402

__all__ = ["IS_ROOT", "MTA", "PostfixInstance", "SMTP_SOURCE", "wait_for"]

BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def postfix_unavailable() -> str:
    """Why Postfix cannot be measured here ("" when it can)."""
    return unavailable()


def without_services(master_cf: str, *names: str) -> str:
    """master.cf text minus the lines that define ``names``."""
    return "".join(line + "\n" for line in master_cf.splitlines()
                   if not line.split()[:1] or line.split()[0] not in names)


# -- the systems -----------------------------------------------------------------

class TriggerSink:
    """A unix socket that takes one-shot wake-ups and drops them (a stand-in
    for qmgr in accept-only runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.contextmanager
def postpy_system(accept_only: bool = False, extra: dict[str, str] | None = None,
                  **params: str) -> Iterator[MTA]:
    """A started postpy on a temporary tree; stopped and removed afterwards.
    ``params`` and then ``extra`` (from the command line) go to main.cf."""
    ensure_system_users()
    base = Path(tempfile.mkdtemp(prefix="postpy-bench-"))
    os.chmod(base, 0o755)
    master_cf = (ROOT / "etc" / "master.cf").read_text()
    if accept_only:
        master_cf = without_services(master_cf, "qmgr")
    settings = {"max_idle": "100s"}       # the default (the test fixture shortens it)
    settings.update(params)
    settings.update(extra or {})
    mta = MTA(base, master_cf, settings)
    sink = None
    try:
        mta.start()
        if accept_only:
            sink = TriggerSink(mta.queue_dir / "public" / "qmgr")
        yield mta
    finally:
        if sink is not None:
            sink.close()
        mta.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postfix_system(accept_only: bool = False, **params: str) -> Iterator[PostfixInstance]:
    """A started private Postfix; ``postfix -c DIR stop`` and removal afterwards."""
    if accept_only:
        # cleanup takes a token from master's flow pipe per message, and only
        # qmgr refills it: without qmgr every message would wait in_flow_delay.
        params = {"in_flow_delay": "0s", **params}
    postfix = PostfixInstance(**params)
    if accept_only:
        text = without_services(POSTFIX_MASTER_CF, "qmgr").replace("{port}", str(postfix.port))
        (postfix.config_dir / "master.cf").write_text(text)
    sink = None
    try:
        postfix.start()
        if accept_only:
            sink = TriggerSink(postfix.base / "queue" / "public" / "qmgr")
        yield postfix
    finally:
        if sink is not None:
            sink.close()
        postfix.stop()


def postpy_master_pid(mta: MTA) -> int:
    return mta.master_pid()


def postfix_master_pid(postfix: PostfixInstance) -> int:
    return int((postfix.base / "queue" / "pid" / "master.pid").read_text().split()[0])


def clear_queue_dir(path: Path) -> int:
    """Remove the queue files under ``path`` (accept-only runs); how many."""
    removed = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
    return removed


def count_files(path: Path) -> int:
    return sum(len(files) for _dirpath, _dirs, files in os.walk(path))


@contextlib.contextmanager
def bench_user(base: Path) -> Iterator[pwd.struct_passwd]:
    """A throw-away Unix user whose home is under ``base`` (root only)."""
    name = "pb" + secrets.token_hex(4)
    home = base / name
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", "-U", name],
                   check=True, capture_output=True, timeout=30)
    try:
        os.chmod(home, 0o755)
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], capture_output=True, timeout=30)


# -- CPU accounting --------------------------------------------------------------

def tree_cpu(root: int) -> float:
    """CPU seconds (user+system, reaped children included) of ``root`` and
    its living descendants; the difference of two readings is what the
    process tree spent in between."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _ticks) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total / CLK_TCK


# -- load generators -------------------------------------------------------------

@dataclass
class Load:
    generator: str
    messages: int
    sessions: int
    size: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        good = self.messages - len(self.errors)
        return good / self.seconds if self.seconds else 0.0


def smtp_source(port: int, messages: int, sessions: int, size: int, *, sender: str,
                rcpt: str, reuse: bool = True, timeout: float = 600) -> Load:
    """Postfix's smtp-source: ``messages`` over ``sessions`` parallel sessions."""
    if SMTP_SOURCE is None:
        raise RuntimeError("smtp-source is not installed (Debian package postfix)")
    argv = [SMTP_SOURCE, "-4", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", sender, "-t", rcpt, "-M", "bench.example", f"127.0.0.1:{port}"]
    if reuse:
        argv.insert(1, "-d")
    load = Load("smtp-source", messages, sessions, size)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    load.seconds = time.perf_counter() - start
    if done.returncode != 0:
        load.errors.append(f"smtp-source exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return load


def message_body(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit 0123456789".ljust(78, b".")
    line += b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"


def python_load(port: int, messages: int, sessions: int, size: int, *, sender: str,
                rcpt: str, reuse: bool = True, timeout: float = 600) -> Load:
    """A stdlib asyncio SMTP client; times each transaction (MAIL .. 250 after DATA)."""
    load = Load("python", messages, sessions, size)
    body = message_body(size)
    start = time.perf_counter()
    asyncio.run(asyncio.wait_for(_drive(load, port, body, sender, rcpt, reuse), timeout))
    load.seconds = time.perf_counter() - start
    return load


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    text = b""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        text += line
        if line[3:4] != b"-":
            return int(line[:3]), text


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   line: bytes, want: int) -> None:
    writer.write(line)
    code, text = await _reply(reader)
    if code // 100 != want:
        raise RuntimeError(f"{line.strip()[:30]!r} -> {text.strip()[:200]!r}")


async def _drive(load: Load, port: int, body: bytes, sender: str, rcpt: str, reuse: bool) -> None:
    taken = [0]
    mail = f"MAIL FROM:<{sender}>\r\n".encode()
    to = f"RCPT TO:<{rcpt}>\r\n".encode()
    run = secrets.token_hex(4)

    async def session() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while taken[0] < load.messages:
            number = taken[0]
            taken[0] += 1
            try:
                async with asyncio.timeout(60):
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        code, text = await _reply(reader)
                        if code != 220:
                            raise RuntimeError(f"greeting {text!r}")
                        await _command(reader, writer, b"EHLO bench.example\r\n", 2)
                    assert reader is not None
                    header = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench {number}\r\n"
                              f"Message-ID: <{run}.{number}@bench.example>\r\n\r\n").encode()
                    began = time.perf_counter()
                    await _command(reader, writer, mail, 2)
                    await _command(reader, writer, to, 2)
                    await _command(reader, writer, b"DATA\r\n", 3)
                    await _command(reader, writer, header + body + b".\r\n", 2)
                    load.latencies.append(time.perf_counter() - began)
                    if not reuse:
                        await _command(reader, writer, b"QUIT\r\n", 2)
                        writer.close()
                        reader = writer = None
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                load.errors.append(f"message {number}: {type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None and reader is not None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError, ValueError):
                async with asyncio.timeout(10):
                    await _command(reader, writer, b"QUIT\r\n", 2)
            writer.close()

    await asyncio.gather(*(session() for _ in range(load.sessions)))


# -- figures ---------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``name=value`` command-line arguments as main.cf settings."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--postpy-param {pair!r}: expected name=value")
        params[name.strip()] = value.strip()
    return params


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}" if theirs else "n/a"


def machine() -> str:
    """One line: date, CPUs, model, kernel, Python and Postfix versions."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    postfix = ""
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    if os.access(postconf, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            postfix = subprocess.run([postconf, "-d", "-h", "mail_version"], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs ({model or 'unknown'}); "
            f"Linux {platform.release()}; Python {platform.python_version()}; "
            f"Postfix {postfix or 'not installed'}; load average {os.getloadavg()[0]:.2f}")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(width) if i else str(cell).ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True))))
