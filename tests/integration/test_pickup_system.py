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
