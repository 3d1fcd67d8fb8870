"""master's reload and stop while mail flows: a real system (smtpd, cleanup,
qmgr, local) delivering to a Maildir, with smtplib clients on loopback.

Each message carries its own Subject; the Maildir is counted per Subject:
every message that got a 250 is delivered exactly once, reloads throttle
no service and kill no process, and `postpy stop` lets deliveries in
flight finish instead of repeating them after the next start.
"""

from __future__ import annotations

import re
import smtplib
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, wait_for

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root to create a Unix user")

SUBJECT = re.compile(rb"^Subject: (\S+)$", re.MULTILINE)
FAST_RETRY = {"home_mailbox": "Maildir/", "minimal_backoff_time": "1s",
              "maximal_backoff_time": "2s", "queue_run_delay": "1s"}


def delivered(home: Path) -> Counter[str]:
    """Subject -> number of Maildir files carrying it."""
    counts: Counter[str] = Counter()
    new = home / "Maildir" / "new"
    for path in (new.iterdir() if new.exists() else []):
        try:
            match = SUBJECT.search(path.read_bytes())
        except FileNotFoundError:
            continue
        if match:
            counts[match.group(1).decode()] += 1
    return counts


class Senders:
    """Threads that send one message per session until stopped (or ``limit``
    messages in all), retrying one that got no 250 like any client;
    ``accepted`` holds each Subject that got a 250."""

    def __init__(self, port: int, rcpt: str, threads: int = 3, limit: int | None = None) -> None:
        self.port, self.rcpt, self.limit = port, rcpt, limit
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted: set[str] = set()
        self.sent = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(f"t{i}",)) for i in range(threads)]

    def __enter__(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _next(self, name: str) -> str | None:
        with self.lock:
            if self.limit is not None and self.sent >= self.limit:
                return None
            self.sent += 1
            return f"{name}-{self.sent}"

    def _run(self, name: str) -> None:
        subject = None
        tries = 0
        while not self.stop.is_set():
            if subject is None or tries >= 5:
                subject, tries = self._next(name), 0
            if subject is None:
                return
            tries += 1
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=15) as s:
                    s.sendmail("sender@example.org", [self.rcpt],
                               f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
                with self.lock:
                    self.accepted.add(subject)
                subject = None
            except (OSError, smtplib.SMTPException) as exc:
                # No 250: a client tries again later, as this one does.
                self.errors.append(f"{subject}: {exc!r}")
                self.stop.wait(0.05)


def assert_each_once(home: Path, accepted: set[str], timeout: float = 30) -> None:
    wait_for(lambda: accepted <= set(delivered(home)), timeout, "every accepted message delivered")
    counts = delivered(home)
    twice = {s: n for s, n in counts.items() if n > 1}
    assert not twice, f"delivered more than once: {twice}"
    # A message queued while its session was cut may be delivered without
    # the client having seen the 250: never the other way round.
    assert accepted <= set(counts)


def test_reloads_under_load_throttle_nothing(mta_factory: Any, unix_users: Any) -> None:
    user = unix_users()
    mta = mta_factory(**FAST_RETRY)
    rcpt = f"{user.pw_name}@mx.test.example"
    with Senders(mta.port, rcpt, limit=120) as senders:
        for n in range(1, 11):
            wait_for(lambda n=n: len(senders.accepted) >= 6 * n or senders.sent >= 120, 30, "mail flowing")
            assert mta.run("postpy", "reload").returncode == 0
            wait_for(lambda n=n: mta.log().count("reload -- version") >= n, 15, f"reload {n}")
        wait_for(lambda: all(not t.is_alive() for t in senders.threads), 60, "senders done")
    assert len(senders.accepted) == 120, senders.errors
    assert senders.errors == []             # a reload drops no connection
    assert_each_once(Path(user.pw_dir), senders.accepted)
    log = mta.log()
    assert "throttling" not in log
    assert "killed by signal" not in log


def test_stop_under_load_delivers_nothing_twice(mta_factory: Any, unix_users: Any) -> None:
    user = unix_users()
    mta = mta_factory(**FAST_RETRY)
    home = Path(user.pw_dir)
    rcpt = f"{user.pw_name}@mx.test.example"
    try:
        with Senders(mta.port, rcpt) as senders:
            for _ in range(3):
                before = sum(delivered(home).values())
                wait_for(lambda b=before: sum(delivered(home).values()) >= b + 15, 30, "deliveries under way")
                stopped = mta.run("postpy", "stop")
                assert stopped.returncode == 0, stopped.stderr
                started = mta.run("postpy", "start")
                assert started.returncode == 0, started.stderr + mta.log()
            wait_for(lambda: sum(delivered(home).values()) >= before + 30, 30, "mail flowing after the restarts")
        assert_each_once(home, senders.accepted)
        assert "killed by signal" not in mta.log()
    finally:
        mta.run("postpy", "stop")
