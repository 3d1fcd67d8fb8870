"""Local submission through maildrop/, a real master, pickup and cleanup.

master.cf has only pickup and cleanup (no qmgr), so queued files stay in
incoming/ where the tests can look at them.
"""

from __future__ import annotations

import os
import pwd
import re
import stat

import pytest
from conftest import IS_ROOT, MAIL_OWNER, as_user, wait_for

from postpy.queue import maildrop, qfile

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  -       -       n       -       0       cleanup
"""


@pytest.fixture
def system(mta_factory):
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def submit(mta, content: bytes, sender: str = "alice", rcpts=("bob@example.net",), **attrs: str) -> str:
    return maildrop.submit_to_maildrop(str(mta.queue_dir), sender, list(rcpts), [content], attrs)


def queued(mta, count: int = 1, timeout: float = 20) -> list[str]:
    wait_for(lambda: len(mta.queue_ids("incoming")) >= count, timeout, f"{count} file(s) in incoming")
    return mta.queue_ids("incoming")


def test_submission_is_picked_up_and_queued(system):
    mta = system
    submit(mta, b"Subject: local\n\nhello\n", full_name="Alice Liddell")
    (queue_id,) = queued(mta)
    uid = os.geteuid()
    mta.wait_log(rf"postpy/pickup\[\d+\]: {queue_id}: uid={uid} from=<alice>")
    mta.wait_log(rf"postpy/cleanup\[\d+\]: {queue_id}: message-id=<\d{{14}}\.{queue_id}@mx\.test\.example>")
    path = mta.queue_dir / "incoming" / queue_id
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    if IS_ROOT:
        assert st.st_uid == pwd.getpwnam(MAIL_OWNER).pw_uid
    env, data = qfile.read_all(str(path))
    assert env.sender == "alice@mx.test.example"
    assert [r.address for r in env.recipients] == ["bob@example.net"]
    assert data.startswith(f"Received: by mx.test.example (postpy, from userid {uid})\n"
                           f"\tid {queue_id}\n\tfor <bob@example.net>; ".encode())
    assert b"\nFrom: Alice Liddell <alice@mx.test.example>\n" in data
    assert data.endswith(b"\n\nhello\n")
    wait_for(lambda: mta.queue_ids("maildrop") == [], 10, "maildrop to empty")


def test_malformed_submission_goes_to_corrupt(system):
    mta = system
    bad = mta.queue_dir / "maildrop" / "0000000000z1.bad"
    bad.write_bytes(b"POSTPY-Q1\nthis is not an envelope\n")
    maildrop.wake_pickup(str(mta.queue_dir))
    wait_for(lambda: (mta.queue_dir / "corrupt" / bad.name).exists(), 20, "file in corrupt/")
    mta.wait_log(rf"warning: {re.escape(bad.name)}: corrupt queue file moved to corrupt/: ")
    assert mta.queue_ids("incoming") == []


def test_links_in_maildrop_are_refused(system):
    mta = system
    fake = mta.base / "fake"                   # a valid submission, written outside maildrop/
    (fake / "maildrop").mkdir(parents=True)
    name = maildrop.submit_to_maildrop(str(fake), "mallory", ["m@example.net"],
                                       b"Subject: linked\n\n", trigger=False)
    target = fake / "maildrop" / name
    os.symlink(target, mta.queue_dir / "maildrop" / "symlinked")
    os.link(target, mta.queue_dir / "maildrop" / "hardlinked")
    maildrop.wake_pickup(str(mta.queue_dir))
    for bad in ("symlinked", "hardlinked"):
        wait_for(lambda bad=bad: os.path.lexists(mta.queue_dir / "corrupt" / bad), 20,
                 f"{bad} in corrupt/")
    mta.wait_log(r"warning: symlinked: corrupt queue file moved to corrupt/: not a regular file")
    mta.wait_log(r"warning: hardlinked: corrupt queue file moved to corrupt/: file has 2 hard links")
    assert mta.queue_ids("incoming") == []
    assert target.exists()


def test_submission_while_stopped_is_picked_up_at_start(system):
    mta = system
    mta.stop()
    submit(mta, b"Subject: while down\n\nqueued later\n")    # the trigger finds nobody
    assert len(mta.queue_ids("maildrop")) == 1
    mta.start()
    (queue_id,) = queued(mta)
    _, data = qfile.read_all(str(mta.queue_dir / "incoming" / queue_id))
    assert data.endswith(b"queued later\n")


def test_too_many_hops_is_returned_to_the_sender(system):
    """A local submission cleanup refuses is queued as already failed (header
    only), so qmgr returns it; it is neither lost nor retried in a loop."""
    mta = system
    submit(mta, b"Received: x\n" * 60 + b"Subject: loop\n\n")
    line = mta.wait_log(r"(\S+): from=<[^>]*>: returned to sender: 5\.4\.6 Too many hops")
    queue_id = line.group(1)
    env, data = qfile.read_all(str(mta.queue_dir / "incoming" / queue_id))
    assert {r.status for r in env.recipients} == {qfile.BOUNCED}
    assert {e.dsn for e in env.log} == {"5.4.6"} and len(env.log) == len(env.recipients)
    assert b"Subject: loop\n" in data and env.attrs.get("ret") == "HDRS"
    assert mta.queue_ids("maildrop") == [] and mta.queue_ids("corrupt") == []


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_unprivileged_user_submits_and_is_identified_by_the_kernel(system):
    mta = system
    nobody = pwd.getpwnam("nobody")
    queue = str(mta.queue_dir)
    name = as_user(nobody, lambda: maildrop.submit_to_maildrop(
        queue, "nobody", ["x@example.net"], b"Subject: from nobody\n\nhi\n", {"full_name": "No Body"}))
    assert not name.startswith("FAILED"), name
    (queue_id,) = queued(mta)
    mta.wait_log(rf"{queue_id}: uid={nobody.pw_uid} from=<nobody>")
    _, data = qfile.read_all(str(mta.queue_dir / "incoming" / queue_id))
    assert f"from userid {nobody.pw_uid})".encode() in data
    assert b"From: No Body <nobody@mx.test.example>" in data
    # nobody cannot list the drop box, nor read the queue
    listing = as_user(nobody, lambda: os.listdir(os.path.join(queue, "maildrop")))
    assert listing.startswith("FAILED: PermissionError"), listing
    peek = as_user(nobody, lambda: os.listdir(os.path.join(queue, "incoming")))
    assert peek.startswith("FAILED: PermissionError"), peek


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_user_outside_authorized_submit_users_cannot_bypass_sendmail(mta_factory):
    """Writing to maildrop/ directly does not get around authorized_submit_users."""
    mta = mta_factory(master_cf=MASTER_CF, authorized_submit_users="root")
    nobody = pwd.getpwnam("nobody")
    queue = str(mta.queue_dir)
    name = as_user(nobody, lambda: maildrop.submit_to_maildrop(
        queue, "nobody", ["x@example.net"], b"Subject: sneaky\n\nhi\n", {}))
    assert not name.startswith("FAILED"), name
    mta.wait_log(rf"maildrop/{name}: uid={nobody.pw_uid}: not in authorized_submit_users")
    wait_for(lambda: (mta.queue_dir / "corrupt" / name).exists(), 10, "refused file in corrupt/")
    assert mta.queue_ids("incoming") == []


# -- issue 10 A: one bad file never stops local mail ----------------------------------

def _with_huge_log_index() -> bytes:
    """A complete submission with an appended L record whose index has 5,000 digits."""
    content = b"Subject: bad\n\n"
    return (b"POSTPY-Q1\nT1.0\nSmallory\nR-bob@example.net\t\t\t\nM%020d\n" % len(content)
            + content + b"E\nL" + b"9" * 5000 + b"\tfailed\t5.0.0\tx\n")


def test_bad_file_first_in_maildrop_blocks_nobody_and_survives_a_restart(system):
    mta = system
    drop, corrupt = mta.queue_dir / "maildrop", mta.queue_dir / "corrupt"
    (drop / "0000000000z0.first").write_bytes(_with_huge_log_index())    # sorts first
    submit(mta, b"Subject: behind it\n\nstill arrives\n")
    wait_for(lambda: (corrupt / "0000000000z0.first").exists(), 20, "bad file in corrupt/")
    (queue_id,) = queued(mta)
    mta.wait_log(r"warning: 0000000000z0\.first: corrupt queue file moved to corrupt/: bad log record")
    # Another one while the system is down: pickup scans it at start-up.
    mta.stop()
    (drop / "0000000000z0.second").write_bytes(_with_huge_log_index())
    submit(mta, b"Subject: while down\n\nafter the restart\n")
    mta.start()
    wait_for(lambda: (corrupt / "0000000000z0.second").exists(), 20, "second bad file in corrupt/")
    ids = queued(mta, 2)
    contents = [qfile.read_all(str(mta.queue_dir / "incoming" / i))[1] for i in ids]
    assert any(c.endswith(b"after the restart\n") for c in contents)
    assert mta.queue_ids("maildrop") == []
    # pickup is still the one started: it never died, and nothing was throttled
    submit(mta, b"Subject: third\n\nstill serving\n")
    queued(mta, 3)
    log = mta.log()
    assert "throttling" not in log and "pickup" not in "".join(
        line for line in log.splitlines() if "exit status" in line or "killed by" in line)


def test_submission_with_too_many_recipients_is_returned_and_blocks_nobody(system):
    """100,000 recipients make an envelope frame (about 6.7 MB) over
    ipc_max_frame: returned to the sender at once, never retried, and the
    submissions behind it are queued."""
    mta = system
    rcpts = [f"user{i}@example.net" for i in range(100_000)]
    big = submit(mta, b"Subject: everyone\n\nhi\n", sender="alice", rcpts=rcpts)
    later = submit(mta, b"Subject: later\n\nbehind the big one\n", sender="carol")
    ids = queued(mta, 2, timeout=60)
    wait_for(lambda: mta.queue_ids("maildrop") == [], 20, "maildrop to empty")
    envs = {i: qfile.read_all(str(mta.queue_dir / "incoming" / i)) for i in ids}
    notices = [(env, data) for env, data in envs.values() if env.sender == ""]
    ((notice, data),) = notices
    assert [r.address for r in notice.recipients] == ["alice@mx.test.example"]
    assert b"Status: 5.5.3" in data and re.search(rb"100000\s+recipients", data)
    assert any(env.sender == "carol@mx.test.example" for env, _ in envs.values())
    mta.wait_log(rf"warning: maildrop/{re.escape(big)} from uid=\d+: message envelope too large")
    mta.wait_log(rf"sender non-delivery notification: maildrop/{re.escape(big)} ")
    assert "will retry" not in mta.log() and mta.queue_ids("corrupt") == []
    assert later not in mta.queue_ids("maildrop")
