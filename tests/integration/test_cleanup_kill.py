"""kill -9 of cleanup processes during a stream of messages, with a real master.

Every message cleanup acknowledged is in incoming/, complete; no file with
a final name is ever partial; what a killed process left behind (.ID.tmp)
is removed by the next cleanup process that starts.
"""

from __future__ import annotations

import os
import random
import signal
import threading

import pytest
from conftest import wait_for

from postpy.cleanup.client import CleanupClient, CleanupUnavailable
from postpy.ipc.messages import Rcpt
from postpy.queue import maildrop, qfile

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  -       -       n       -       0       cleanup
"""


@pytest.fixture
def system(mta_factory):
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def cleanup_pids(mta) -> list[int]:
    return [pid for pid, args in mta.children().items() if "cleanup" in args]


def killer(mta, stop: threading.Event, killed: list[int], pace: tuple[float, float]) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        pids = cleanup_pids(mta)
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        stop.wait(rng.uniform(*pace))     # pacing between kills, not a wait for a state


def subject_of(data: bytes) -> str:
    for line in data.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    raise AssertionError("no Subject in queued message")


def check_incoming(mta) -> dict[str, str]:
    """Parse every queue file completely; subject -> queue ID."""
    found = {}
    for queue_id in mta.queue_ids("incoming"):
        env, data = qfile.read_all(str(mta.queue_dir / "incoming" / queue_id))   # raises if partial
        assert data.endswith(b"END-OF-MESSAGE\n"), queue_id
        found[subject_of(data)] = queue_id
    return found


def leftovers(mta) -> list[str]:
    return [n for n in os.listdir(mta.queue_dir / "incoming") if n.startswith(".")]


def flush_leftovers(mta) -> None:
    """Start a fresh cleanup (it removes stale .tmp files) and wait until they are gone."""
    for pid in cleanup_pids(mta):
        os.kill(pid, signal.SIGKILL)
    path = str(mta.queue_dir / "private" / "cleanup")

    def one_more() -> bool:
        try:
            with CleanupClient(path, timeout=10) as client:
                result = client.submit("a@b", [Rcpt("c@d")], {"origin": "local"},
                                       [b"Subject: flush\n\nEND-OF-MESSAGE\n"])
            return result.status == "ok"
        except CleanupUnavailable:
            return False

    wait_for(one_more, 30, "a fresh cleanup process")
    wait_for(lambda: not leftovers(mta), 20, "stale .tmp files to be removed")


def test_kill_cleanup_during_direct_submissions(system):
    mta = system
    path = str(mta.queue_dir / "private" / "cleanup")
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    killed: list[int] = []

    def sender(worker: int) -> None:
        body = [b"x" * 4095 + b"\n"] * 25
        for n in range(40):
            subject = f"w{worker}-m{n}"
            try:
                with CleanupClient(path, timeout=15) as client:
                    result = client.submit("a@example.org", [Rcpt("b@example.net")],
                                           {"origin": "local"},
                                           [f"Subject: {subject}\n\n".encode(), *body,
                                            b"END-OF-MESSAGE\n"])
            except CleanupUnavailable:
                continue
            if result.status == "ok":
                with lock:
                    acked[subject] = result.queue_id

    kill_thread = threading.Thread(target=killer, args=(mta, stop, killed, (0.05, 0.2)))
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    kill_thread.start()
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    stop.set()
    kill_thread.join(10)
    assert killed, "the test killed no cleanup process"
    assert acked, "no message was acknowledged"
    found = check_incoming(mta)
    for subject, queue_id in acked.items():
        assert found.get(subject) == queue_id, f"acknowledged {subject} ({queue_id}) missing"
    flush_leftovers(mta)
    check_incoming(mta)


def test_kill_cleanup_during_pickup_stream_loses_nothing(system):
    mta = system
    stop = threading.Event()
    killed: list[int] = []
    kill_thread = threading.Thread(target=killer, args=(mta, stop, killed, (0.02, 0.1)))
    kill_thread.start()
    subjects = [f"pickup-{n}" for n in range(60)]

    def drained() -> bool:
        maildrop.wake_pickup(str(mta.queue_dir))     # pickup waits for a trigger after a failure
        return not mta.queue_ids("maildrop")

    try:
        for subject in subjects:
            maildrop.submit_to_maildrop(str(mta.queue_dir), "alice", ["bob@example.net"],
                                        [f"Subject: {subject}\n\n".encode(),
                                         b"y" * 100_000 + b"\n", b"END-OF-MESSAGE\n"])
        wait_for(drained, 90, "maildrop to drain")
    finally:
        stop.set()
        kill_thread.join(10)
    assert killed, "the test killed no cleanup process"
    found = check_incoming(mta)
    assert set(subjects) <= set(found), sorted(set(subjects) - set(found))
    assert not os.listdir(mta.queue_dir / "corrupt")
    flush_leftovers(mta)
