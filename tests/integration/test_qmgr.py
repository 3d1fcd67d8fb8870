"""qmgr with real master, real qmgr and a stand-in delivery agent.

The agent (tests/data/daemons/fake_agent) answers by recipient name, so
these tests exercise qmgr's scheduling, recording, deferral, expiry and
restart behaviour independently of the real delivery agents.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import time

from conftest import IS_ROOT, MAIL_OWNER, ROOT, as_user, wait_for

from postpy.ipc.trigger import FLUSH, SCAN, send_trigger
from postpy.queue import qfile, qid

AGENT = ROOT / "tests" / "data" / "daemons" / "fake_agent"


def qmgr_cf(journal: str) -> str:
    return (
        "qmgr      unix n - n 300 1 qmgr\n"
        f"local     unix - - n - 2 {AGENT} {journal}\n"
        f"smtp      unix - - n - 2 {AGENT} {journal}\n"
    )


def inject(mta, recipients: list[str], sender: str = "sender@test.example",
           body: bytes = b"Subject: test\n\nhello\n", arrival: float | None = None) -> str:
    """Place a complete queue file in incoming/ (as cleanup would) and wake qmgr."""
    queue_id = qid.new_queue_id()
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in recipients],
                         arrival=arrival if arrival is not None else time.time())
    path = qfile.write_queue_file(str(mta.queue_dir / "incoming"), queue_id, env, body)
    if IS_ROOT:
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), SCAN)
    return queue_id


def listening(path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def journal_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_delivers_each_recipient_once_and_removes(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)))
    queue_id = inject(mta, ["a@mx.test.example", "b@mx.test.example", "c@remote.example"])
    mta.wait_log(rf"{queue_id}: removed")
    assert sorted(journal_lines(journal)) == sorted(
        f"{queue_id} {a}" for a in ("a@mx.test.example", "b@mx.test.example", "c@remote.example"))
    assert f"{queue_id}: from=<sender@test.example>, size=21, nrcpt=3 (queue active)" in mta.log()
    assert mta.queue_ids("incoming") == mta.queue_ids("active") == []


def test_deferred_recipient_waits_and_flush_retries(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)), minimal_backoff_time="300s")
    queue_id = inject(mta, ["ok@mx.test.example", "defer@mx.test.example"])
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "message deferred")
    path = mta.queue_dir / "deferred" / queue_id
    env = qfile.read_envelope(str(path))
    assert [r.status for r in env.recipients] == [qfile.DONE, qfile.PENDING]
    assert env.last_log()[1].text == "try again later"
    assert os.stat(path).st_mtime > time.time() + 200          # next attempt in the future
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), FLUSH)
    wait_for(lambda: mta.log().count(f"{queue_id}: from=<") == 2, 10, "second attempt")
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "deferred again")
    assert journal_lines(journal) == [f"{queue_id} ok@mx.test.example"]   # never twice


def test_expired_message_is_returned(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)), maximal_queue_lifetime="1s",
                      minimal_backoff_time="1s", maximal_backoff_time="1s", queue_run_delay="1s")
    queue_id = inject(mta, ["defer@mx.test.example"])
    mta.wait_log(rf"{queue_id}: from=<sender@test.example>, status=expired, returned to sender", 15)
    env = qfile.read_envelope(str(mta.queue_dir / "deferred" / queue_id))
    assert env.recipients[0].status == qfile.BOUNCED           # notice owed (no bounce service here)
    assert env.last_log()[0].action == "failed"


def test_transport_maps_error_bounces_without_delivery(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)),
                      transport_maps="inline:{{blocked.example = error:5.7.1 no mail for you}}")
    queue_id = inject(mta, ["x@blocked.example"])
    mta.wait_log(rf"{queue_id}: to=<x@blocked.example>, relay=none, .*dsn=5.7.1, status=bounced \(no mail for you\)")
    assert journal_lines(journal) == []


def test_agent_crash_defers_and_retry_delivers_once(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)), minimal_backoff_time="1s",
                      maximal_backoff_time="1s", queue_run_delay="1s")
    queue_id = inject(mta, ["first@remote.example", "crash@remote.example"])
    mta.wait_log(rf"{queue_id}: removed", 20)
    lines = journal_lines(journal)
    assert lines.count(f"{queue_id} crash@remote.example") == 1
    assert lines.count(f"{queue_id} first@remote.example") in (1, 2)   # in flight with the crash


def test_qmgr_restart_takes_up_active_messages(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)), service_throttle_time="1s")
    qmgr_pid = wait_for(lambda: [p for p, a in mta.children().items() if "qmgr" in a], 10, "qmgr")[0]
    os.kill(qmgr_pid, signal.SIGSTOP)
    # A message half-done before the crash: one recipient already recorded.
    queue_id = qid.new_queue_id()
    env = qfile.Envelope("s@test.example", [qfile.Recipient("done@x.example", status=qfile.DONE),
                                            qfile.Recipient("todo@x.example")], arrival=time.time())
    path = qfile.write_queue_file(str(mta.queue_dir / "active"), queue_id, env, b"\n")
    if IS_ROOT:
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    os.kill(qmgr_pid, signal.SIGKILL)
    mta.wait_log(rf"{queue_id}: removed", 20)
    assert journal_lines(journal) == [f"{queue_id} todo@x.example"]


def test_flush_refused_for_unauthorized_user(mta_factory, shared_dir):
    import pytest
    if not IS_ROOT:
        pytest.skip("needs root to act as another uid")
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)), authorized_flush_users="root",
                      minimal_backoff_time="300s")
    queue_id = inject(mta, ["defer@mx.test.example"])
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "message deferred")
    nobody = pwd.getpwnam("nobody")
    assert as_user(nobody, lambda: send_trigger(str(mta.queue_dir / "public" / "qmgr"), FLUSH)) == "True"
    mta.wait_log(rf"flush request from uid {nobody.pw_uid} refused")
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), FLUSH)          # root may
    wait_for(lambda: mta.log().count(f"{queue_id}: from=<") == 2, 10, "flushed by root")


def test_garbled_and_truncated_files_go_to_corrupt(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)))
    good = inject(mta, ["ok@mx.test.example"])
    mta.wait_log(rf"{good}: removed")
    bad = {}
    for label, data in (("garbled", b"this is not a queue file\n"),
                        ("truncated", None)):
        queue_id = qid.new_queue_id()
        if data is None:                       # a real file cut short
            env = qfile.Envelope("s@test.example", [qfile.Recipient("x@mx.test.example")], arrival=time.time())
            full = qfile.encode_envelope(env)
            data = full + b"M" + b"0" * 19 + b"9"    # content promised, never written
        path = mta.queue_dir / "incoming" / queue_id
        path.write_bytes(data)
        if IS_ROOT:
            owner = pwd.getpwnam(MAIL_OWNER)
            os.chown(path, owner.pw_uid, owner.pw_gid)
        bad[label] = queue_id
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), SCAN)
    for queue_id in bad.values():
        mta.wait_log(rf"{queue_id}: corrupt queue file moved to corrupt/")
        assert (mta.queue_dir / "corrupt" / queue_id).exists()
    # qmgr is still the same process and still delivers
    after = inject(mta, ["ok2@mx.test.example"])
    mta.wait_log(rf"{after}: removed")
    assert "panic" not in mta.log() and "fatal" not in mta.log()


def test_message_removed_while_qmgr_waits_for_bounce(mta_factory, shared_dir):
    """postsuper -d during qmgr's wait for the bounce service must not kill qmgr."""
    journal = shared_dir / "journal"
    gate = shared_dir / "gate"
    slow = ROOT / "tests" / "data" / "daemons" / "slow_bounce"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)) + f"bounce unix - - n - 1 {slow} {gate}\n")
    qmgr_pid = wait_for(lambda: [p for p, a in mta.children().items() if "qmgr" in a], 10, "qmgr")[0]
    queue_id = inject(mta, ["bounce@mx.test.example"])
    wait_for(lambda: (shared_dir / "gate.waiting").exists(), 10, "qmgr to ask for a notice")
    os.unlink(mta.queue_dir / "active" / queue_id)                 # as postsuper -d would
    gate.touch()
    after = inject(mta, ["ok@mx.test.example"])
    mta.wait_log(rf"{after}: removed")
    assert "fatal" not in mta.log()
    assert [p for p, a in mta.children().items() if "qmgr" in a] == [qmgr_pid]


def test_delay_warning_sent_once_and_reason_still_listed(mta_factory, shared_dir):
    journal = shared_dir / "journal"
    gate = shared_dir / "gate"
    gate.touch()                                                  # the stand-in answers at once
    slow = ROOT / "tests" / "data" / "daemons" / "slow_bounce"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)) + f"bounce unix - - n - 1 {slow} {gate}\n"
                      "showq unix n - n - - showq\n",
                      delay_warning_time="1s", minimal_backoff_time="300s")
    queue_id = inject(mta, ["defer@mx.test.example"], arrival=time.time() - 5)
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "message deferred")
    env = qfile.read_envelope(str(mta.queue_dir / "deferred" / queue_id))
    assert [e.action for e in env.log] == ["delayed", "warned"]
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), FLUSH)
    wait_for(lambda: mta.log().count(f"{queue_id}: from=<") == 2, 10, "second attempt")
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "deferred again")
    env = qfile.read_envelope(str(mta.queue_dir / "deferred" / queue_id))
    assert [e.action for e in env.log].count("warned") == 1       # once only
    listing = mta.run("postqueue", "-j").stdout
    assert '"delay_reason": "try again later"' in listing, listing


def test_result_of_a_delivery_in_flight_is_recorded_when_master_dies(mta_factory, shared_dir):
    """master SIGKILLed while an agent delivers: qmgr records the result
    before it exits, so the next master does not deliver it again."""
    journal = shared_dir / "journal"
    mta = mta_factory(master_cf=qmgr_cf(str(journal)))
    queue_id = inject(mta, ["slow@mx.test.example"])
    wait_for(lambda: (shared_dir / "journal.started").exists(), 15, "the delivery to start")
    qmgr = [pid for pid, args in mta.children().items() if "qmgr" in args]
    os.kill(mta.master_pid(), signal.SIGKILL)
    # qmgr has seen master go once it stops listening; only then may the delivery end.
    wait_for(lambda: not listening(mta.queue_dir / "public" / "qmgr"), 10, "qmgr to stop listening")
    (shared_dir / "journal.go").touch()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in qmgr), 20, "the old qmgr to exit")
    assert "Executor shutdown" not in mta.log()
    assert "fatal" not in mta.log()
    mta.wait_log(rf"{queue_id}: removed")
    assert journal_lines(journal) == [f"{queue_id} slow@mx.test.example"]
    assert mta.queue_ids("active") == []
