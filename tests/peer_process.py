"""Start and stop a real peer daemon (Dovecot, Cyrus, ...) for a test.

:func:`start` runs it in its own process group and polls ``ready`` until it
answers (or it exits, or ``timeout`` passes: then it is killed and a
``RuntimeError`` says what it printed); :func:`stop` asks it to stop with
SIGTERM and kills whatever of its group is left.  :func:`lmtp_greets` is
the readiness check of an LMTP server on a unix socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable


def start(argv: list[str], ready: Callable[[], bool], name: str, *, timeout: float = 20.0,
          describe: Callable[[], str] = lambda: "") -> subprocess.Popen[bytes]:
    """The running process once ``ready()``; ``describe()`` adds its log to errors."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"{name} exited {proc.returncode}: {out}\n{describe()}")
        if ready():
            return proc
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{name} was not ready in {timeout}s\n{describe()}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, up to 15 s to exit, then SIGKILL for the whole process group."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # the daemon's own children
    except ProcessLookupError:
        pass
    proc.wait(5)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a single peer process, SIGKILL it after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def lmtp_greets(path: str) -> bool:
    """Does an LMTP server answer 220 on the unix socket ``path``?"""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            ok = s.recv(512).startswith(b"220 ")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False
