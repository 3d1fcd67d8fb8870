"""Failure delay and cut-off per client address, in memory and in files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from postpy.sasl import ratelimit
from postpy.sasl.ratelimit import DirectoryStore, FailureLimiter, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = time.time()   # real time: the sweep compares file mtimes

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "directory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ratelimit.FailureStore:
    if request.param == "memory":
        return MemoryStore()
    return DirectoryStore(ratelimit.prepare_directory(str(tmp_path / "data")))


def test_delay_grows_and_limit_blocks(store: ratelimit.FailureStore) -> None:
    clock = Clock()
    lim = FailureLimiter(delay=1.0, limit=3, window=60, clock=clock, store=store)
    assert not lim.blocked("192.0.2.1")
    assert [lim.record_failure("192.0.2.1") for _ in range(3)] == [1.0, 2.0, 3.0]
    assert lim.blocked("192.0.2.1")
    assert not lim.blocked("2001:db8::1")          # per client
    clock.now += 59
    assert lim.blocked("192.0.2.1")
    clock.now += 1                                 # the oldest failures leave the window
    assert not lim.blocked("192.0.2.1")
    assert lim.failures("192.0.2.1") == 0


def test_window_slides(store: ratelimit.FailureStore) -> None:
    clock = Clock()
    lim = FailureLimiter(delay=0.5, limit=2, window=10, clock=clock, store=store)
    lim.record_failure("a")
    clock.now += 6
    assert lim.record_failure("a") == 1.0
    assert lim.blocked("a")
    clock.now += 5                                 # first failure expired, second not
    assert lim.failures("a") == 1 and not lim.blocked("a")


def test_zero_limit_never_blocks_and_delay_is_capped() -> None:
    lim = FailureLimiter(delay=10, limit=0, window=60, max_delay=25)
    delays = [lim.record_failure("a") for _ in range(5)]
    assert delays == [10, 20, 25, 25, 25]
    assert not lim.blocked("a")


def test_memory_is_bounded_by_expiry() -> None:
    clock = Clock()
    store = MemoryStore()
    lim = FailureLimiter(delay=0, limit=5, window=1, clock=clock, store=store)
    for i in range(2000):
        lim.record_failure(f"10.0.{i // 256}.{i % 256}")
    clock.now += 2
    lim.record_failure("192.0.2.9")
    assert len(store.table) == 1


def test_processes_share_the_directory(tmp_path: Path) -> None:
    """Two smtpd processes (two limiters) see each other's failures."""
    directory = ratelimit.prepare_directory(str(tmp_path / "data"))
    assert oct(os.stat(directory).st_mode & 0o777) == "0o700"
    clock = Clock()
    one = FailureLimiter(limit=3, window=60, clock=clock, store=DirectoryStore(directory))
    two = FailureLimiter(limit=3, window=60, clock=clock, store=DirectoryStore(directory))
    one.record_failure("192.0.2.1")
    two.record_failure("192.0.2.1")
    assert one.record_failure("192.0.2.1") == 3.0
    assert two.blocked("192.0.2.1")
    clock.now += 61
    assert not one.blocked("192.0.2.1")
    assert os.listdir(directory) == []             # expired files are removed when read


def test_directory_sweep_and_odd_addresses(tmp_path: Path) -> None:
    directory = ratelimit.prepare_directory(str(tmp_path / "data"))
    clock = Clock()
    lim = FailureLimiter(limit=3, window=60, clock=clock, store=DirectoryStore(directory))
    lim.record_failure("../../etc/passwd")
    assert os.listdir(directory) == ["_.._2f.._2fetc_2fpasswd"]
    (Path(directory) / "198.51.100.1").write_text("garbage\n")
    os.utime(Path(directory) / "198.51.100.1", (clock.now - 120, clock.now - 120))
    clock.now += 61
    lim.record_failure("192.0.2.5")                # a sweep is due: old files go
    assert sorted(os.listdir(directory)) == ["192.0.2.5"]


def test_unwritable_store_falls_back_to_memory(tmp_path: Path) -> None:
    warnings: list[str] = []
    lim = FailureLimiter(delay=2, limit=2, window=60, warn=warnings.append,
                         store=DirectoryStore(str(tmp_path / "missing")))
    assert lim.record_failure("a") == 2
    assert lim.record_failure("a") == 4
    assert lim.blocked("a")
    assert isinstance(lim.store, MemoryStore) and len(warnings) == 1
