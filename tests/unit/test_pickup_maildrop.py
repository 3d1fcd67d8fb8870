"""The maildrop writer and reader, and pickup feeding a real cleanup (no master)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import as_user
from test_cleanup_session import CleanupServer, Queue

from postpy.ipc import codec
from postpy.ipc.messages import CleanupHello, CleanupResult
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


# -- one bad file never blocks the others (issue 10 A) -------------------------------

HUGE_LOG_INDEX = GOOD + b"L" + b"9" * 5000 + b"\tfailed\t5.0.0\tx\n"


def test_a_5000_digit_log_index_goes_to_corrupt_and_the_scan_goes_on(qdir, server):
    raw_file(qdir, "0000000000z0.first", HUGE_LOG_INDEX)       # sorts before every real name
    good = submit(qdir)
    pickup = pickup_for(qdir, server)
    assert pickup.scan() == {"0000000000z0.first": Outcome.REFUSED, good: Outcome.QUEUED}
    assert os.listdir(qdir.base / "corrupt") == ["0000000000z0.first"]
    assert "0000000000z0.first: corrupt queue file moved to corrupt/: bad log record" in qdir.log()
    assert len(qdir.files()) == 1 and maildrop_files(qdir) == []


def test_any_parse_error_is_the_file_s_problem(qdir, server, monkeypatch):
    """Even a reader bug (an exception other than CorruptQueueFile) costs the
    file, not the scan: pickup scans at start-up, and a crash there loops."""
    raw_file(qdir, "0000000000z0.first", GOOD)
    good = submit(qdir)
    real = maildrop.read_submission

    def buggy(fd, st, name, **kw):
        if name.startswith("0000"):
            raise ValueError("reader bug")
        return real(fd, st, name, **kw)

    monkeypatch.setattr(maildrop, "read_submission", buggy)
    outcomes = pickup_for(qdir, server).scan()
    assert outcomes == {"0000000000z0.first": Outcome.REFUSED, good: Outcome.QUEUED}
    assert "corrupt queue file moved to corrupt/: cannot parse: ValueError: reader bug" in qdir.log()


def many(count: int) -> tuple[str, ...]:
    return tuple(f"user{i}@example.net" for i in range(count))


SMALL_FRAME = 70000       # above the client's 64 KiB data frames, below 1,500 recipients


def small_frames(qdir: Queue, server_frame: int = SMALL_FRAME) -> tuple[CleanupServer, Pickup]:
    srv = CleanupServer(qdir.settings(max_frame=server_frame))
    pickup = Pickup(PickupSettings(cleanup_socket=srv.path, timeout=10, max_frame=server_frame,
                                   myhostname="mx.test.example"), str(qdir.base))
    return srv, pickup


def test_envelope_too_large_for_cleanup_is_returned_not_retried(qdir):
    """An envelope over the frame limit can never be queued: the sender gets a
    notice, the file goes, and the files behind it are picked up."""
    big = submit(qdir, b"Subject: to everyone\n\nhello\n", sender="alice", rcpts=many(1500))
    good = submit(qdir)
    srv, pickup = small_frames(qdir)
    try:
        assert pickup.scan() == {big: Outcome.RETURNED, good: Outcome.QUEUED}
    finally:
        srv.close()
    assert maildrop_files(qdir) == [] and os.listdir(qdir.base / "corrupt") == []
    notices = []
    for queue_id in qdir.files():
        env, data = qfile.read_all(str(qdir.incoming / queue_id))
        if env.sender == "":
            notices.append((env, data))
    ((env, data),) = notices
    assert [r.address for r in env.recipients] == ["alice@test.example"]
    assert b"Subject: Undelivered Mail Returned to Sender\n" in data
    assert b"Status: 5.5.3\n" in data and b"Final-Recipient: rfc822; user0@example.net\n" in data
    assert data.count(b"Final-Recipient:") == 100            # the first ones, not all 1500
    assert re.search(rb"1500\s+recipients", data) and b"Subject: to everyone\n" in data
    assert b"\nhello\n" not in data                          # the header block only
    assert f"maildrop/{big} from uid={os.geteuid()}: message envelope too large" in qdir.log()
    assert re.search(rf"\S+: sender non-delivery notification: maildrop/{re.escape(big)} ", qdir.log())


def test_envelope_too_large_with_the_null_sender_goes_to_corrupt(qdir):
    big = submit(qdir, sender="", rcpts=many(1500))
    good = submit(qdir)
    srv, pickup = small_frames(qdir)
    try:
        assert pickup.scan() == {big: Outcome.REFUSED, good: Outcome.QUEUED}
    finally:
        srv.close()
    assert os.listdir(qdir.base / "corrupt") == [big]
    assert len(qdir.files()) == 1


def test_envelope_records_beyond_reach_are_not_parsed(qdir, server):
    """Records longer than a few frames could never be sent: refused unparsed."""
    big = submit(qdir, rcpts=many(2000))
    pickup = Pickup(PickupSettings(cleanup_socket=server.path, timeout=10, max_frame=4096),
                    str(qdir.base))
    assert pickup.scan() == {big: Outcome.REFUSED}
    assert f"{big}: corrupt queue file moved to corrupt/: envelope larger than 12288 bytes" in qdir.log()


class FussyCleanup:
    """A cleanup peer that answers temp for mail from <stuck>, ok otherwise."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.senders: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        n = 0
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                n += 1
                queue_id = f"FUSSY{n}"
                codec.send(conn, CleanupHello(queue_id))
                env = codec.recv(conn, "pickup")
                while codec.recv_frame(conn, "pickup")[0] != codec.END:
                    pass
                self.senders.append(env.sender)
                status = "temp" if env.sender == "stuck" else "ok"
                codec.send(conn, CleanupResult(status, queue_id, "4.3.0 try later" if status == "temp" else ""))

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def test_a_file_left_in_place_never_holds_up_newer_ones(qdir):
    stuck = submit(qdir, sender="stuck")
    first = submit(qdir, sender="first")
    path = str(qdir.base / "fussy")
    peer = FussyCleanup(path)
    try:
        pickup = Pickup(PickupSettings(cleanup_socket=path, timeout=10), str(qdir.base))
        assert pickup.scan() == {stuck: Outcome.RETRY, first: Outcome.QUEUED}
        later = submit(qdir, sender="later")
        assert later > stuck                      # it sorts after the stuck one ...
        outcomes = pickup.scan()
        assert list(outcomes.items()) == [(later, Outcome.QUEUED), (stuck, Outcome.RETRY)]  # ... yet goes first
        assert peer.senders == ["stuck", "first", "later", "stuck"]
    finally:
        peer.close()
    assert maildrop_files(qdir) == [stuck]
    assert f"maildrop/{stuck}: cleanup: 4.3.0 try later; will retry" in qdir.log()


def test_cleanup_down_stops_the_scan_without_blaming_the_file(qdir):
    one, two = submit(qdir), submit(qdir)
    pickup = pickup_for(qdir, None)
    assert pickup.scan() == {one: Outcome.RETRY}
    assert pickup.retried == {}
    assert maildrop_files(qdir) == [one, two]
