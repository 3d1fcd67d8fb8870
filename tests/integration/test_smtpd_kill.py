"""kill -9 of smtpd during a stream of messages: every message that got a
250 is in the queue, complete, with its own content.  kill -9 of master
with a session open: `postpy start` works at once."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import socket
import threading
import time
from typing import Any

from conftest import wait_for
from test_smtpd_system import MASTER_CF, PARAMS, queue_id_of

from postpy.queue import qfile


def smtpd_pids(mta: Any) -> list[int]:
    return [pid for pid, args in mta.children().items() if "smtpd" in args]


def sender(port: int, name: str, stop: threading.Event, accepted: dict[str, str]) -> None:
    """Send messages, three per session, until told to stop; record each 250."""
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                for _ in range(3):
                    n += 1
                    subject = f"{name}-{n}"
                    if s.mail("a@example.org")[0] != 250 or s.rcpt("alice@test.example")[0] != 250:
                        s.rset()
                        continue
                    code, reply = s.data(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
                    if code == 250:
                        accepted[queue_id_of(reply)] = subject
        except (OSError, smtplib.SMTPException):
            continue        # killed mid-session: what got no 250 may be lost


def test_kill_smtpd_during_stream(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, service_throttle_time="1s", **PARAMS)
    stop = threading.Event()
    accepted: dict[str, str] = {}
    threads = [threading.Thread(target=sender, args=(mta.port, f"s{i}", stop, accepted))
               for i in range(3)]
    for t in threads:
        t.start()
    rng = random.Random(11)
    kills = 0
    try:
        wait_for(lambda: len(accepted) >= 5, 20, "first messages")
        while kills < 6:
            pids = smtpd_pids(mta)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            stop.wait(rng.uniform(0.2, 0.5))      # pacing between kills
        before = len(accepted)
        wait_for(lambda: len(accepted) >= before + 5, 20, "mail to flow again after the kills")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert kills == 6
    incoming = mta.queue_dir / "incoming"
    for queue_id, subject in accepted.items():
        env, content = qfile.read_all(str(incoming / queue_id))     # raises if partial
        assert content.endswith(f"\n\nbody of {subject}\n".encode()), queue_id
        assert [r.address for r in env.recipients] == ["alice@test.example"]
    # Nothing with a final name is partial, acknowledged or not.
    for queue_id in mta.queue_ids("incoming"):
        qfile.read_all(str(incoming / queue_id))


def test_start_right_after_master_sigkill_with_a_session_open(mta_factory: Any) -> None:
    """The orphaned daemons stop listening at once: a new master binds the port."""
    mta = mta_factory(start=False)
    assert mta.run("postpy", "start").returncode == 0
    session = smtplib.SMTP("127.0.0.1", mta.port, timeout=10)
    try:
        assert session.ehlo()[0] == 250
        old = list(mta.children())
        os.kill(mta.master_pid(), signal.SIGKILL)
        began = time.monotonic()
        restarted = mta.run("postpy", "start")
        assert restarted.returncode == 0, restarted.stderr + mta.log()
        assert time.monotonic() - began < 15
        assert "Address already in use" not in mta.log()
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as fresh:
            assert fresh.ehlo()[0] == 250
        # every daemon of the killed master goes away by itself
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in old), 30, "orphans to exit")
    finally:
        session.close()
        stopped = mta.run("postpy", "stop")
    assert stopped.returncode == 0, stopped.stderr


def test_start_reports_master_death_at_once(mta_factory: Any) -> None:
    """A master that cannot bind dies; `postpy start` says so without waiting 20 s."""
    mta = mta_factory(start=False)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", mta.port))
        squatter.listen(1)
        began = time.monotonic()
        result = mta.run("postpy", "start")
        elapsed = time.monotonic() - began
    assert result.returncode == 1
    assert "startup failed" in result.stderr
    assert elapsed < 15, elapsed
    assert "Address already in use" in mta.log()


def test_stop_answers_a_message_on_its_way_and_closes_idle_sessions(mta_factory: Any) -> None:
    """`postpy stop` with two sessions open: the idle one is told 421 at once;
    the one in the middle of DATA gets its 250 for the queued message (a
    client that saw no 250 would send it again), then 421."""
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS)
    idle = socket.create_connection(("127.0.0.1", mta.port), timeout=10)
    busy = socket.create_connection(("127.0.0.1", mta.port), timeout=10)
    idle_file, busy_file = idle.makefile("rb"), busy.makefile("rb")
    try:
        for sock, file in ((idle, idle_file), (busy, busy_file)):
            assert file.readline().startswith(b"220")
            sock.sendall(b"HELO client.example\r\n")
            assert file.readline().startswith(b"250")
        for command in (b"MAIL FROM:<a@example.org>", b"RCPT TO:<alice@test.example>", b"DATA"):
            busy.sendall(command + b"\r\n")
            assert busy_file.readline()[:1] in (b"2", b"3")
        busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        stopping = threading.Thread(target=lambda: mta.run("postpy", "stop"))
        stopping.start()
        assert idle_file.readline().startswith(b"421 4.3.2 ")
        assert idle_file.readline() == b""                      # and closed
        busy.sendall(b"second half\r\n.\r\n")
        reply = busy_file.readline()
        assert reply.startswith(b"250 "), reply
        busy.sendall(b"NOOP\r\n")
        assert busy_file.readline().startswith(b"421 4.3.2 ")
        stopping.join(30)
        assert not stopping.is_alive()
        qid = queue_id_of(reply.decode())
        assert qid in mta.queue_ids("incoming") + mta.queue_ids("active") + mta.queue_ids("deferred") \
            or f"{qid}: removed" in mta.log()
    finally:
        idle.close()
        busy.close()
