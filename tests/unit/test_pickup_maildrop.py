"""The maildrop writer and reader, and pickup feeding a real cleanup (no master)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import as_user
from test_cleanup_session import CleanupServer, Queue

from postpy.pickup.scan import Outcome, Pickup, PickupSettings
from postpy.queue import maildrop, qfile

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def qdir(tmp_path: Path) -> Queue:
    queue = Queue(tmp_path)
    for name, mode in (("maildrop", 0o1733), ("corrupt", 0o700), ("public", 0o755)):
        (tmp_path / name).mkdir()
        os.chmod(tmp_path / name, mode)
    return queue


@pytest.fixture
def server(qdir: Queue) -> Iterator[CleanupServer]:
    srv = CleanupServer(qdir.settings())
    yield srv
    srv.close()


def pickup_for(qdir: Queue, server: CleanupServer | None) -> Pickup:
    path = server.path if server else str(qdir.base / "no-cleanup")
    return Pickup(PickupSettings(cleanup_socket=path, timeout=10), str(qdir.base))


def maildrop_files(qdir: Queue) -> list[str]:
    return sorted(os.listdir(qdir.base / "maildrop"))


def submit(qdir: Queue, content: bytes = b"Subject: hi\n\nbody\n", sender: str = "alice",
           rcpts: tuple[str, ...] = ("bob@example.net",), **attrs: str) -> str:
    return maildrop.submit_to_maildrop(str(qdir.base), sender, list(rcpts), [content], attrs,
                                       trigger=False)


# -- writer -------------------------------------------------------------------------

def test_submission_file_is_complete_readable_and_unguessable(qdir):
    name = submit(qdir, full_name="Alice A.")
    assert re.fullmatch(r"[0-9A-Za-z]+z[0-9A-Za-z]+\.[0-9a-f]{32}", name)
    assert maildrop_files(qdir) == [name]
    path = qdir.base / "maildrop" / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    env, data = qfile.read_all(str(path))
    assert (env.sender, [r.address for r in env.recipients]) == ("alice", ["bob@example.net"])
    assert env.attrs == {"full_name": "Alice A."}
    assert data == b"Subject: hi\n\nbody\n"


def test_submission_wakes_pickup(qdir):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(qdir.base / "public" / "pickup"))
    listener.listen(1)
    listener.settimeout(10)
    try:
        maildrop.submit_to_maildrop(str(qdir.base), "a", ["b@c"], b"Subject: x\n\n")
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(1) == b"W"
    finally:
        listener.close()


def test_wake_pickup_with_a_long_queue_path(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    (deep / "public").mkdir(parents=True)
    here = os.getcwd()
    listener = socket.socket(socket.AF_UNIX)
    os.chdir(deep)
    try:
        listener.bind("public/pickup")
    finally:
        os.chdir(here)
    listener.listen(1)
    try:
        assert maildrop.wake_pickup(str(deep)) is True
        assert os.getcwd() == here
    finally:
        listener.close()


@pytest.mark.parametrize(("sender", "rcpts", "attrs"), [
    ("a", [], {}),
    ("a\nb", ["x@y"], {}),
    ("a", ["x@y\nBcc: z"], {}),
    ("a", ["x@y"], {"uid": "0"}),
    ("a", ["x@y"], {"client_addr": "1.2.3.4"}),
    ("a", ["x@y"], {"full_name": "x\ny"}),
    ("a", ["x@y"], {"ret": "EVERYTHING"}),
    ("a", ["x@y"], {"envid": "has space"}),
    ("a", [qfile.Recipient("x@y", notify="SOMETIMES")], {}),
])
def test_bad_submissions_are_refused_before_writing(qdir, sender, rcpts, attrs):
    with pytest.raises(ValueError):
        maildrop.submit_to_maildrop(str(qdir.base), sender, rcpts, b"x\n", attrs, trigger=False)
    assert maildrop_files(qdir) == []


def test_failing_content_leaves_nothing(qdir):
    def content():
        yield b"Subject: x\n\n"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maildrop.submit_to_maildrop(str(qdir.base), "a", ["b@c"], content(), trigger=False)
    assert maildrop_files(qdir) == []


def test_missing_maildrop_is_a_maildrop_error(tmp_path):
    with pytest.raises(maildrop.MaildropError):
        maildrop.submit_to_maildrop(str(tmp_path), "a", ["b@c"], b"x\n", trigger=False)


# -- reader -----------------------------------------------------------------------

def raw_file(qdir: Queue, name: str, data: bytes) -> str:
    path = qdir.base / "maildrop" / name
    path.write_bytes(data)
    return name


GOOD = (b"POSTPY-Q1\nT1.0\nSalice\nAfull_name=A\nAuid=0\nAclient_addr=6.6.6.6\n"
        b"R-bob@example.net\t\t\t\nM%020d\nSubject: x\n\nE\n" % len(b"Subject: x\n\n"))


def parse(qdir: Queue, name: str) -> maildrop.Submission:
    fd, st = maildrop.open_checked(str(qdir.base / "maildrop"), name)
    try:
        return maildrop.read_submission(fd, st, name)
    finally:
        os.close(fd)


def test_reader_ignores_untrusted_attributes(qdir):
    sub = parse(qdir, raw_file(qdir, "good", GOOD))
    assert sub.uid == os.geteuid()
    assert sub.attrs == {"full_name": "A"}
    assert sub.sender == "alice"


MALFORMED = [
    b"",
    b"not a queue file\n",
    GOOD.replace(b"POSTPY-Q1", b"POSTPY-Q9"),
    GOOD[:-2],                                        # no end marker
    GOOD[:-10],                                       # truncated content
    GOOD + b"garbage\n",                              # junk after the end marker
    GOOD.replace(b"Salice", b"Sali%0Ace"),            # newline in the sender
    GOOD.replace(b"R-bob@example.net", b"R-bob%0D%0A@example.net"),
    GOOD.replace(b"R-bob@example.net\t\t\t", b"R-bob@example.net\t\t\tSOMETIMES"),
    GOOD.replace(b"R-bob@example.net", b"RDbob@example.net"),   # nothing pending
    GOOD.replace(b"R-bob@example.net\t\t\t\n", b""),            # no recipient
    GOOD.replace(b"Afull_name=A", b"Aextract=maybe"),
    GOOD.replace(b"Afull_name=A", b"Afull_name=A%0AB"),
    GOOD.replace(b"T1.0", b"Tsoon"),
    GOOD.replace(b"M0", b"M9"),
    GOOD.replace(b"Auid=0\n", b"Xwhat\n"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_reader_refuses_malformed_files(qdir, data):
    with pytest.raises(qfile.CorruptQueueFile):
        parse(qdir, raw_file(qdir, "bad", data))


def test_reader_refuses_symlinks_hard_links_and_fifos(qdir, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(GOOD)
    drop = qdir.base / "maildrop"
    os.symlink(target, drop / "link")
    os.link(target, drop / "hard")
    os.mkfifo(drop / "fifo")
    (drop / "dir").mkdir()
    for name, why in (("link", "not a regular file"), ("hard", "2 hard links"),
                      ("fifo", "not a regular file"), ("dir", "not a regular file")):
        with pytest.raises(qfile.CorruptQueueFile, match=why):
            parse(qdir, name)
    with pytest.raises(FileNotFoundError):
        parse(qdir, "vanished")


# -- pickup --------------------------------------------------------------------------

def test_pickup_feeds_cleanup_and_removes_the_file(qdir, server):
    name = submit(qdir, b"Subject: from pickup\n\nbody\n", sender="alice", rcpts=("root",),
                  full_name="Alice Liddell")
    outcomes = pickup_for(qdir, server).scan()
    assert outcomes == {name: Outcome.QUEUED}
    assert maildrop_files(qdir) == []
    (queue_id,) = qdir.files()
    env, data = qfile.read_all(str(qdir.incoming / queue_id))
    uid = os.geteuid()
    assert env.sender == "alice@test.example"
    assert [(r.address, r.orig) for r in env.recipients] == [("root@test.example", "root")]
    assert env.attrs["origin"] == "pickup" and env.attrs["uid"] == str(uid)
    assert data.startswith(f"Received: by mx.test.example (postpy, from userid {uid})\n".encode())
    assert b"From: Alice Liddell <alice@test.example>\n" in data
    assert b"\nMessage-ID: <" in data and b"\nDate: " in data
    assert data.endswith(b"\n\nbody\n")
    assert f"{queue_id}: uid={uid} from=<alice>" in qdir.log()


def test_pickup_extract_with_bcc(qdir, server):
    submit(qdir, b"To: bob@example.net\nBcc: eve@example.net\n\nhi\n", rcpts=("bob@example.net",),
           extract="yes")
    pickup_for(qdir, server).scan()
    (queue_id,) = qdir.files()
    env, data = qfile.read_all(str(qdir.incoming / queue_id))
    assert [r.address for r in env.recipients] == ["bob@example.net", "eve@example.net"]
    assert b"eve" not in data


def test_pickup_moves_malformed_files_to_corrupt(qdir, server):
    raw_file(qdir, "garbage", b"hello, I am not a queue file\n")
    good = submit(qdir)
    outcomes = pickup_for(qdir, server).scan()
    assert outcomes == {"garbage": Outcome.REFUSED, good: Outcome.QUEUED}
    assert os.listdir(qdir.base / "corrupt") == ["garbage"]
    assert re.search(r"warning: garbage: corrupt queue file moved to corrupt/: bad magic", qdir.log())
    assert len(qdir.files()) == 1


def test_pickup_refuses_links(qdir, server, tmp_path):
    target = tmp_path / "target"
    target.write_bytes(GOOD)
    os.symlink(target, qdir.base / "maildrop" / "sym")
    os.link(target, qdir.base / "maildrop" / "hard")
    outcomes = pickup_for(qdir, server).scan()
    assert outcomes == {"hard": Outcome.REFUSED, "sym": Outcome.REFUSED}
    assert sorted(os.listdir(qdir.base / "corrupt")) == ["hard", "sym"]
    assert qdir.files() == []
    assert target.read_bytes() == GOOD


def test_pickup_refused_mail_is_returned_and_never_loops(qdir, server):
    """cleanup queues a refused local submission as already failed (the
    sender is told); pickup removes it like any queued one."""
    name = submit(qdir, b"Received: x\n" * 60 + b"Subject: loop\n\n")
    pickup = pickup_for(qdir, server)
    assert pickup.scan() == {name: Outcome.QUEUED}
    assert "returned to sender: 5.4.6 Too many hops" in qdir.log()
    assert pickup.scan() == {}
    assert maildrop_files(qdir) == []


def test_pickup_perm_refusal_without_a_sender_goes_to_corrupt(qdir, server):
    """With the null sender nobody can be told: the file is kept in corrupt/."""
    name = submit(qdir, b"Received: x\n" * 60 + b"Subject: loop\n\n", sender="")
    pickup = pickup_for(qdir, server)
    assert pickup.scan() == {name: Outcome.REFUSED}
    assert os.listdir(qdir.base / "corrupt") == [name]
    assert "refused by cleanup: 5.4.6 Too many hops" in qdir.log()
    assert pickup.scan() == {}
    assert qdir.files() == []


def test_pickup_leaves_files_while_cleanup_is_down(qdir):
    name = submit(qdir)
    assert pickup_for(qdir, None).scan() == {name: Outcome.RETRY}
    assert maildrop_files(qdir) == [name]
    assert "cannot submit to cleanup" in qdir.log()


def test_pickup_ignores_files_being_written_and_removes_stale_ones(qdir, server):
    drop = qdir.base / "maildrop"
    (drop / ".fresh.tmp").write_bytes(b"partial")
    (drop / ".stale.tmp").write_bytes(b"partial")
    os.utime(drop / ".stale.tmp", (1, 1))
    assert pickup_for(qdir, server).scan() == {}
    assert maildrop_files(qdir) == [".fresh.tmp"]


@pytest.fixture
def open_qdir() -> Iterator[Queue]:
    """A queue in a directory every user can reach (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="pp-md-", dir="/tmp"))
    os.chmod(base, 0o755)
    queue = Queue(base)
    for name, mode in (("maildrop", 0o1733), ("corrupt", 0o700), ("public", 0o755)):
        (base / name).mkdir()
        os.chmod(base / name, mode)
    yield queue
    shutil.rmtree(base, ignore_errors=True)


def submit_as(user: pwd.struct_passwd, queue: Queue) -> str:
    """Submit from a child process running as ``user``; the file name."""
    name = as_user(user, lambda: maildrop.submit_to_maildrop(
        str(queue.base), user.pw_name, ["x@example.net"], b"Subject: s\n\n", trigger=False))
    assert not name.startswith("FAILED"), name
    return name


@pytest.mark.skipif(not IS_ROOT, reason="needs root to submit as another user")
def test_submitter_uid_comes_from_the_kernel(open_qdir):
    queue = open_qdir
    nobody = pwd.getpwnam("nobody")
    name = submit_as(nobody, queue)
    path = queue.base / "maildrop" / name
    assert path.stat().st_uid == nobody.pw_uid
    # forge a uid attribute in place: the owner (and so the kernel's word) stays nobody
    path.write_bytes(path.read_bytes().replace(b"\nSnobody\n", b"\nSnobody\nAuid=0\n"))
    assert path.stat().st_uid == nobody.pw_uid
    server = CleanupServer(queue.settings())
    try:
        assert pickup_for(queue, server).scan() == {name: Outcome.QUEUED}
    finally:
        server.close()
    (queue_id,) = queue.files()
    env, data = qfile.read_all(str(queue.incoming / queue_id))
    assert env.attrs["uid"] == str(nobody.pw_uid)
    assert f"from userid {nobody.pw_uid})".encode() in data
    assert f"{queue_id}: uid={nobody.pw_uid} from=<nobody>" in queue.log()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as other users")
def test_other_users_cannot_list_or_remove_submissions(open_qdir):
    queue = open_qdir
    nobody = pwd.getpwnam("nobody")
    name = submit(queue)                      # root's submission
    drop = os.path.join(str(queue.base), "maildrop")
    for attempt in (lambda: os.listdir(drop),
                    lambda: os.unlink(os.path.join(drop, name)),
                    lambda: os.rename(os.path.join(drop, name), os.path.join(drop, "mine"))):
        assert as_user(nobody, attempt).startswith("FAILED: PermissionError")
    assert maildrop_files(queue) == [name]


def test_pickup_removes_an_empty_directory_and_warns_once_about_a_full_one(qdir, server):
    drop = qdir.base / "maildrop"
    (drop / "empty").mkdir()
    (drop / "full").mkdir()
    (drop / "full" / "x").write_bytes(b"x")
    os.chmod(drop / "full", 0o555)
    pickup = pickup_for(qdir, server)
    try:
        pickup.scan()
        pickup.scan()
        assert not (drop / "empty").exists()
        if os.geteuid() != 0:     # root may remove anything; an ordinary pickup may not
            assert qdir.log().count("maildrop/full: a directory, not a submission") == 1
    finally:
        os.chmod(drop / "full", 0o755)


def test_pickup_streams_no_more_than_the_size_limit(qdir, server):
    """A huge (or sparse) submission costs pickup limit + 1 bytes, not its size."""
    name = submit(qdir, b"Subject: big\n\n" + b"x" * 200_000)
    fd, st = maildrop.open_checked(str(qdir.base / "maildrop"), name)
    try:
        sub = maildrop.read_submission(fd, st, name)
        sent = sum(len(c) for c in maildrop.read_content(fd, sub, limit=1000))
    finally:
        os.close(fd)
    assert sent == 1001
