"""postsuper as a real command on a temporary queue directory (no master needed)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, IS_ROOT, MAIL_OWNER, wait_for
from smtppeers import ThreadPeer

from postpy.queue import qfile
from postpy.queue.layout import check_layout
from postpy.queue.qid import ALPHABET, new_queue_id

CONTENT = b"From: alice@example.org\nSubject: x\n\nbody\n"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


class Tree:
    """A configuration directory and a queue directory laid out as master would."""

    def __init__(self, base: Path, *, create: bool = True) -> None:
        self.base = base
        self.config_dir = base / "etc"
        self.queue_dir = base / "spool"
        self.log_path = base / "maillog"
        if IS_ROOT:
            owner = pwd.getpwnam(MAIL_OWNER)
            self.uid, self.gid = owner.pw_uid, owner.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
        if create:
            self.create()

    def create(self) -> None:
        self.config_dir.mkdir()
        (self.config_dir / "main.cf").write_text(
            f"queue_directory = {self.queue_dir}\nmaillog_file = {self.log_path}\n"
            f"myhostname = mx.test.example\n")
        check_layout(str(self.queue_dir), self.uid, self.gid, repair=True)
        self.log_path.touch()
        os.chmod(self.log_path, 0o666)    # postsuper logs after dropping to mail_owner

    def place(self, queue: str, sender: str = "alice@example.org", queue_id: str = "") -> str:
        queue_id = queue_id or new_queue_id()
        env = qfile.Envelope(sender, [qfile.Recipient("bob@example.net")], arrival=time.time())
        path = qfile.write_queue_file(str(self.queue_dir / queue), queue_id, env, CONTENT, durable=False)
        self.own(Path(path))
        return queue_id

    def own(self, path: Path) -> None:
        if IS_ROOT:
            os.chown(path, self.uid, self.gid)

    def ids(self, queue: str) -> list[str]:
        return sorted(n for n in os.listdir(self.queue_dir / queue) if not n.startswith("."))

    def where(self, queue_id: str) -> list[str]:
        return [q for q in QUEUES if (self.queue_dir / q / queue_id).exists()]

    def run(self, *args: str, input: str | None = None, user: str | None = None,
            config: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "postsuper"), *(["-c", str(self.config_dir)] if config else []), *args]
        kwargs: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = dict(os.environ)
        env.pop("MAIL_CONFIG", None)
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30,
                              env=env, **kwargs)  # type: ignore[call-overload]

    def log(self) -> str:
        return self.log_path.read_text()


class TriggerListener:
    """A unix socket standing in for public/qmgr or public/pickup."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(5)
        self.sock.settimeout(10)

    def received(self) -> bytes:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            return conn.recv(16)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tree(system_users: None) -> Iterator[Tree]:
    base = Path(tempfile.mkdtemp(prefix="postpy-test-"))
    os.chmod(base, 0o755)
    try:
        yield Tree(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def dead_pid_id() -> str:
    """A queue ID whose encoded pid is not a running process."""
    pid = 4_000_000            # above pid_max's usual ceiling (4194304 is the maximum)
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    digits = ""
    value = pid
    while value:
        value, rem = divmod(value, len(ALPHABET))
        digits = ALPHABET[rem] + digits
    return new_queue_id().partition("z")[0] + "z" + digits


def test_delete_one_and_summary(tree: Tree) -> None:
    doomed, kept = tree.place("deferred"), tree.place("deferred")
    result = tree.run("-d", doomed)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "postsuper: Deleted: 1 message\n"
    assert tree.ids("deferred") == [kept]
    log = tree.log()
    assert re.search(rf"mx postpy/postsuper\[\d+\]: {doomed}: removed\n", log)
    assert "Deleted: 1 message" in log


def test_delete_all_in_default_and_named_queues(tree: Tree) -> None:
    ids = {q: tree.place(q) for q in ("incoming", "active", "deferred", "hold")}
    dropped = tree.place("maildrop")
    result = tree.run("-d", "ALL", "deferred")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "postsuper: Deleted: 1 message\n"
    assert tree.where(ids["deferred"]) == []
    result = tree.run("-d", "ALL")
    assert result.stderr == "postsuper: Deleted: 3 messages\n"
    assert all(tree.ids(q) == [] for q in ("incoming", "active", "deferred", "hold"))
    assert tree.ids("maildrop") == [dropped]          # not a default queue of -d


def test_ids_from_stdin_unknown_and_invalid(tree: Tree) -> None:
    one, two, other = tree.place("deferred"), tree.place("hold"), tree.place("active")
    result = tree.run("-d", "-", input=f"{one}\n{two}  NOSUCHIDz1\n../hold/{other}\n")
    assert result.returncode == 0
    assert "postsuper: Deleted: 2 messages\n" in result.stderr
    assert "invalid mail queue id: '../hold/" in result.stderr
    assert tree.where(one) == tree.where(two) == []
    assert tree.where(other) == ["active"]


def test_nothing_found_prints_nothing(tree: Tree) -> None:
    result = tree.run("-d", new_queue_id(), "-h", "ALL")
    assert (result.returncode, result.stderr) == (0, "")


def test_hold_and_release(tree: Tree) -> None:
    listener = TriggerListener(tree.queue_dir / "public" / "qmgr")
    try:
        held = tree.place("deferred")
        moved = [tree.place("incoming"), tree.place("active")]
        old = time.time() + 3600         # a deferred file's mtime is its next retry
        os.utime(tree.queue_dir / "deferred" / held, (old, old))
        result = tree.run("-h", held)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "postsuper: Placed on hold: 1 message\n"
        assert tree.where(held) == ["hold"]
        assert f"{held}: placed on hold" in tree.log()
        result = tree.run("-h", "ALL")
        assert result.stderr == "postsuper: Placed on hold: 2 messages\n"
        assert tree.ids("hold") == sorted([held, *moved])
        before = time.time()
        result = tree.run("-H", held)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "postsuper: Released from hold: 1 message\n"
        assert tree.where(held) == ["deferred"]
        assert (tree.queue_dir / "deferred" / held).stat().st_mtime >= before - 1
        assert f"{held}: released from hold" in tree.log()
        assert listener.received() == b"F"
        # -H only looks in hold: releasing a deferred message does nothing
        result = tree.run("-H", held)
        assert (result.returncode, result.stderr) == (0, "")
        result = tree.run("-H", "ALL")
        assert result.stderr == "postsuper: Released from hold: 2 messages\n"
        assert tree.ids("hold") == []
        assert listener.received() == b"F"
    finally:
        listener.close()


def test_requeue_moves_to_maildrop_and_wakes_pickup(tree: Tree) -> None:
    listener = TriggerListener(tree.queue_dir / "public" / "pickup")
    try:
        ids = [tree.place("deferred"), tree.place("hold")]
        result = tree.run("-r", "ALL")
        assert result.returncode == 0, result.stderr
        assert result.stderr == "postsuper: Requeued: 2 messages\n"
        assert tree.ids("maildrop") == sorted(ids)
        for queue_id in ids:
            assert f"{queue_id}: requeued" in tree.log()
            st = (tree.queue_dir / "maildrop" / queue_id).stat()
            assert (st.st_uid, st.st_nlink) == (tree.uid, 1)      # pickup's attribution rules
        assert listener.received() == b"W"
    finally:
        listener.close()


def test_destination_taken_is_left_alone(tree: Tree) -> None:
    queue_id = tree.place("deferred")
    tree.place("hold", queue_id=queue_id)
    result = tree.run("-h", queue_id)
    assert result.returncode == 0
    assert "already exists" in result.stderr
    assert sorted(tree.where(queue_id)) == ["deferred", "hold"]


def test_structure_check(tree: Tree) -> None:
    good = tree.place("deferred")
    bad_name = tree.queue_dir / "incoming" / "not-a-queue-id"
    bad_name.write_bytes(b"whatever")
    broken = new_queue_id()
    (tree.queue_dir / "active" / broken).write_bytes(b"POSTPY-Q1\nT1\nS\nM00000000000000000099\nshort")
    truncated = tree.place("hold")
    path = tree.queue_dir / "hold" / truncated
    path.write_bytes(path.read_bytes()[:-2] + b"X\n")          # no end marker
    stale, fresh = tree.queue_dir / "incoming" / f".{new_queue_id()}.tmp", \
        tree.queue_dir / "deferred" / f".{dead_pid_id()}.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
        tree.own(tmp)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    for p in (bad_name, tree.queue_dir / "active" / broken):
        tree.own(p)
    result = tree.run("-s")
    assert result.returncode == 0, result.stderr
    assert tree.where(good) == ["deferred"]
    assert tree.ids("corrupt") == sorted(["not-a-queue-id", broken, truncated])
    assert "not-a-queue-id: corrupt queue file moved to corrupt/: file name is not a queue ID" in tree.log()
    assert f"{truncated}: corrupt queue file moved to corrupt/: missing end marker" in tree.log()
    assert not stale.exists()
    assert fresh.exists()               # -s removes only old temporary files


def test_purge_temporary_files(tree: Tree) -> None:
    gone_writer = tree.queue_dir / "incoming" / f".{dead_pid_id()}.tmp"
    live_writer = tree.queue_dir / "incoming" / f".{new_queue_id()}.tmp"     # this test's own pid
    maildrop_tmp = tree.queue_dir / "maildrop" / f".{dead_pid_id()}.{'a' * 32}.tmp"
    for tmp in (gone_writer, live_writer, maildrop_tmp):
        tmp.write_bytes(b"partial")
        tree.own(tmp)
    queued = tree.place("incoming")
    result = tree.run("-p")
    assert result.returncode == 0, result.stderr
    assert not gone_writer.exists() and not maildrop_tmp.exists()
    assert live_writer.exists()
    assert tree.ids("incoming") == [queued]
    assert f"removed temporary file incoming/{gone_writer.name}" in tree.log()


@pytest.mark.parametrize(("args", "message"), [
    (["-x"], "option -x not recognized"),
    (["-d"], "option -d requires argument"),
    ([], "nothing to do"),
    (["-d", "ALL", "nosuchqueue"], "invalid queue name: nosuchqueue"),
    (["-e", "ALL"], "option -e not recognized"),
])
def test_usage_errors(tree: Tree, args: list[str], message: str) -> None:
    result = tree.run(*args)
    assert result.returncode == 64
    assert f"postsuper: fatal: {message}" in result.stderr
    assert "usage: postsuper" in result.stderr


def runnable_as(user: str) -> bool:
    """Can this user run the checkout's virtualenv (not when it lives under /root)?"""
    entry = pwd.getpwnam(user)
    try:
        subprocess.run([str(BIN / "python"), "-c", "import postpy"], user=entry.pw_uid,
                       group=entry.pw_gid, extra_groups=[], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run as another user")
def test_reserved_for_the_superuser_and_mail_owner(tree: Tree) -> None:
    if not (runnable_as("nobody") and runnable_as(MAIL_OWNER)):
        pytest.skip("the virtualenv cannot be run by other users here")
    queue_id = tree.place("deferred")
    result = tree.run("-d", queue_id, user="nobody")
    assert result.returncode == 1
    assert result.stderr == "postsuper: fatal: use of this command is reserved for the superuser\n"
    assert tree.where(queue_id) == ["deferred"]
    result = tree.run("-d", queue_id, user=MAIL_OWNER)
    assert result.returncode == 0, result.stderr
    assert tree.where(queue_id) == []


def test_config_from_mail_config_environment(tree: Tree) -> None:
    queue_id = tree.place("deferred")
    env = dict(os.environ, MAIL_CONFIG=str(tree.config_dir))
    result = subprocess.run([str(BIN / "postsuper"), "-d", queue_id], capture_output=True,
                            text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert tree.where(queue_id) == []


def test_release_and_requeue_with_the_whole_system(mta_factory) -> None:  # type: ignore[no-untyped-def]
    """-H and -r put held mail back on the road, here to an SMTP peer."""
    with ThreadPeer() as peer:
        mta = mta_factory(transport_maps=f"inline:{{example.net=smtp:[127.0.0.1]:{peer.port}}}")
        tree = Tree(mta.base, create=False)       # the running system's tree (same layout)
        released, requeued = tree.place("hold"), tree.place("hold")
        assert mta.run("postpy", "flush").returncode == 0
        assert peer.state.messages == []
        result = tree.run("-H", released)
        assert result.stderr == "postsuper: Released from hold: 1 message\n"
        mta.wait_log(rf"{released}: to=<bob@example.net>, .*status=sent", 20)
        result = tree.run("-r", requeued)
        assert result.stderr == "postsuper: Requeued: 1 message\n"
        wait_for(lambda: len(peer.state.messages) == 2, 20, "the requeued message at the peer")
        assert tree.ids("hold") == []
        mta.wait_log(r"pickup\[\d+\]: \w+: uid=\d+ from=<alice@example.org>", 10)
