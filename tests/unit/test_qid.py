"""Queue IDs: format, uniqueness, order, parsing (postpy.queue.qid)."""

from __future__ import annotations

import os
import time

import pytest

from postpy.queue import qid
from postpy.queue.qid import ALPHABET, BASE, arrival_of, is_queue_id, new_queue_id


@pytest.fixture(autouse=True)
def fresh_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that pass ``now`` must not push the process's IDs into the future."""
    monkeypatch.setattr(qid, "_last", 0)


def test_alphabet() -> None:
    assert BASE == len(ALPHABET) == len(set(ALPHABET)) == 51
    assert list(ALPHABET) == sorted(ALPHABET)
    assert not set(ALPHABET) & set("aeiouAEIOUz")


def test_shape() -> None:
    queue_id = new_queue_id()
    assert is_queue_id(queue_id)
    assert len(queue_id) <= 17
    assert queue_id[10] == "z"
    assert not queue_id.startswith(".")


def test_unique_and_increasing_within_a_process() -> None:
    ids = [new_queue_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_same_instant_still_increases() -> None:
    ids = [new_queue_id(1_700_000_000.0) for _ in range(100)]
    assert len(set(ids)) == 100 and ids == sorted(ids)
    assert arrival_of(ids[-1]) == pytest.approx(1_700_000_000.0 + 99e-6)


def test_clock_going_back_does_not_repeat() -> None:
    a = new_queue_id(1_700_000_100.0)
    b = new_queue_id(1_700_000_000.0)
    assert b > a


@pytest.mark.parametrize("now", [0.0, 1.0, 1_700_000_000.5, 1_756_030_272.123456, 4_102_444_800.999999])
def test_arrival_round_trip(now: float) -> None:
    assert arrival_of(new_queue_id(now)) == pytest.approx(now, abs=1e-6)


def test_sorts_by_time_across_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    t = 1_700_000_000.0
    for i, pid in enumerate([4194304, 7, 51, 300000, 2, 99999]):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        made.append((t + i * 0.000001, new_queue_id(t + i * 0.000001)))
    ids = [queue_id for _, queue_id in made]
    assert sorted(ids) == ids
    assert all(is_queue_id(i) for i in ids)


def test_different_processes_same_instant_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 1000)
    a = new_queue_id(1_700_000_000.0)
    monkeypatch.setattr(qid, "_last", 0)
    monkeypatch.setattr(os, "getpid", lambda: 1001)
    b = new_queue_id(1_700_000_000.0)
    assert a != b and a[:10] == b[:10]


def test_now_is_used() -> None:
    before = time.time()
    queue_id = new_queue_id()
    assert before - 1 <= arrival_of(queue_id) <= time.time() + 1


@pytest.mark.parametrize("name, ok", [
    ("5BRW1D3Hqpz2S3", True),
    ("0000000000z1", True),
    ("yyyyyyyyyyzyyyyyy", True),
    ("", False),
    ("5BRW1D3Hqp", False),                 # no separator, no pid
    ("5BRW1D3Hqpz", False),                # empty pid
    ("5BRW1D3Hqpz1234567", False),         # pid part too long
    ("5BRW1D3HqAz2S3", False),             # vowel
    ("5BRW1D3Hqpz2z3", False),             # z twice
    ("5BRW1D3Hqp-2S3", False),
    (".5BRW1D3Hqpz2S3.tmp", False),
    ("5BRW1D3Hqpz2S3\n", False),
    ("../../etc/passwd", False),
])
def test_is_queue_id(name: str, ok: bool) -> None:
    assert is_queue_id(name) is ok


def test_arrival_of_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        arrival_of("aeiouaeiouz1")
