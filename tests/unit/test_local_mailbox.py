"""mbox append with locking (postpy.local.mailbox), /file and Maildir delivery."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_local_support import (  # noqa: F401  (the *_fixture names are fixtures)
    IS_ROOT,
    acting_uid,
    base_fixture,
    chown_to_actor,
)

from postpy.local import file as file_dest
from postpy.local import mailbox, maildir
from postpy.local.outcome import DeliveryError
from postpy.util.privs import Identity, PrivilegeError

FAST = {"attempts": 2, "delay": 0.01, "stale_after": 500.0}


def to_file(path: Path | str, data: bytes, who: Identity) -> None:
    file_dest.deliver(str(path), data, who, attempts=2, delay=0.01, stale_after=500.0,
                      size_limit=0)


@pytest.fixture
def who(base: Path) -> Identity:
    uid, gid = acting_uid()
    return Identity("tester", uid, gid, str(base / "shared"), "/bin/sh")


@pytest.fixture
def spool(base: Path) -> Path:
    path = base / "mail"
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


def policy(**kwargs: object) -> mailbox.MboxPolicy:
    return mailbox.MboxPolicy(**{**FAST, **kwargs})  # type: ignore[arg-type]


def test_creates_mailbox_owned_by_user_mode_0600(spool: Path, who: Identity) -> None:
    path = spool / "tester"
    mailbox.append(str(path), b"From a\nmsg1\n\n", who, policy())
    mailbox.append(str(path), b"From b\nmsg2\n\n", who, policy())
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (who.uid, who.gid)
    assert path.read_bytes() == b"From a\nmsg1\n\nFrom b\nmsg2\n\n"
    assert not (spool / "tester.lock").exists()


@pytest.mark.skipif(not IS_ROOT, reason="needs root: a spool directory only root can write")
def test_root_creates_and_dotlocks_in_a_closed_spool(base: Path, who: Identity) -> None:
    spool = base / "closed"
    spool.mkdir()
    os.chmod(spool, 0o755)              # root's; the user cannot create files here
    path = spool / "tester"
    mailbox.append(str(path), b"x\n", who, policy(root_fallback=True))
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (who.uid, 0o600)
    assert path.read_bytes() == b"x\n"
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(spool / "other"), b"x\n", who, policy(root_fallback=False))
    assert info.value.dsn == "4.2.0" and "Permission denied" in info.value.text


def test_symlink_refused(spool: Path, who: Identity, base: Path) -> None:
    target = base / "shared" / "target"
    target.write_bytes(b"")
    os.chmod(target, 0o666)
    (spool / "tester").symlink_to(target)
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(spool / "tester"), b"x\n", who, policy())
    assert info.value.temporary
    assert info.value.text == f"cannot open {spool}/tester: is a symbolic link"
    assert target.read_bytes() == b""


def test_not_a_regular_file(spool: Path, who: Identity) -> None:
    os.mkfifo(spool / "tester")
    os.chmod(spool / "tester", 0o666)
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(spool / "tester"), b"x\n", who, policy(fail_dsn="5.2.0"))
    assert (info.value.dsn, info.value.text) == ("5.2.0", f"cannot open {spool}/tester: "
                                                          "not a regular file")


def test_size_limit_bounces_and_writes_nothing(spool: Path, who: Identity) -> None:
    path = spool / "tester"
    mailbox.append(str(path), b"a" * 60, who, policy())
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(path), b"b" * 50, who, policy(size_limit=100))
    assert info.value.dsn == "5.2.2"
    assert path.read_bytes() == b"a" * 60


def test_write_error_truncates_back(spool: Path, who: Identity,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = spool / "tester"
    mailbox.append(str(path), b"first\n\n", who, policy())

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mailbox.os, "fsync", broken_fsync)
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(path), b"second message\n\n", who, policy())
    assert (info.value.dsn, info.value.text) == ("4.3.0", "error writing message: "
                                                          "No space left on device")
    assert path.read_bytes() == b"first\n\n"
    assert not (spool / "tester.lock").exists()


def test_fresh_dotlock_means_busy_and_stale_one_is_removed(spool: Path, who: Identity) -> None:
    path = spool / "tester"
    lock = spool / "tester.lock"
    lock.write_text("999\n")
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(path), b"x\n", who, policy())
    assert info.value.dsn == "4.2.0"
    assert lock.exists()
    old = time.time() - 1000
    os.utime(lock, (old, old))
    chown_to_actor(lock)                # a sticky spool: only its owner may remove it
    mailbox.append(str(path), b"x\n", who, policy())
    assert path.read_bytes() == b"x\n"
    assert not lock.exists()


def test_fcntl_lock_held_elsewhere_defers(spool: Path, who: Identity) -> None:
    path = spool / "tester"
    mailbox.append(str(path), b"", who, policy())
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(DeliveryError) as info:
            mailbox.append(str(path), b"x\n", who, policy())
        assert info.value.dsn == "4.2.0"
        assert "exclusive access" in info.value.text
    finally:
        holder.communicate("", timeout=10)
    mailbox.append(str(path), b"x\n", who, policy())
    assert path.read_bytes() == b"x\n"


# -- /file ------------------------------------------------------------------------

def test_file_destination(base: Path, who: Identity) -> None:
    path = base / "shared" / "archive"
    to_file(path, b"From a\nm\n\n", who)
    assert path.read_bytes() == b"From a\nm\n\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    to_file("/dev/null", b"x", who)


def test_file_destination_refuses_symlink_and_unwritable(base: Path, who: Identity) -> None:
    target = base / "shared" / "t"
    target.write_bytes(b"")
    chown_to_actor(target)
    (base / "shared" / "link").symlink_to(target)
    with pytest.raises(DeliveryError) as info:
        to_file(str(base / "shared" / "link"), b"x", who)
    assert info.value.dsn == "5.2.0"
    assert info.value.text == (f"cannot append message to file {base}/shared/link: "
                               f"cannot open {base}/shared/link: is a symbolic link")
    os.chmod(target, 0o444)             # not even its owner may write it
    with pytest.raises(DeliveryError) as info:
        to_file(str(target), b"x", who)
    assert info.value.dsn == "5.2.0"
    assert "Permission denied" in info.value.text
    assert target.read_bytes() == b""


def test_file_in_unwritable_directory_fails_permanently(base: Path, who: Identity) -> None:
    closed = base / "closed"
    closed.mkdir(mode=0o555)
    os.chmod(closed, 0o555)
    if not IS_ROOT and os.access(closed, os.W_OK):
        pytest.skip("directory permissions are not enforced here")
    with pytest.raises(DeliveryError) as info:
        to_file(str(closed / "f"), b"x", who)
    assert info.value.dsn == "5.2.0"


# -- Maildir -----------------------------------------------------------------------

NAME = re.compile(r"^\d+\.M\d+P\d+Q\d+\.mx\.test\.example$")


def test_maildir_created_and_message_in_new(base: Path, who: Identity) -> None:
    box = base / "shared" / "Maildir"
    first = maildir.deliver(str(box) + "/", b"one\n", who, hostname="mx.test.example")
    second = maildir.deliver(str(box) + "/", b"two\n", who, hostname="mx.test.example")
    for sub in ("", "tmp", "new", "cur"):
        st = os.stat(box / sub)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == who.uid
    names = sorted(os.listdir(box / "new"))
    assert len(names) == 2 and first != second
    assert all(NAME.match(n) for n in names)
    assert os.listdir(box / "tmp") == []
    st = os.stat(first)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, who.uid)
    assert Path(first).read_bytes() == b"one\n"


def test_maildir_unique_name_escapes_host() -> None:
    name = maildir.unique_name("a/b:c", now=1700000000.25)
    assert re.fullmatch(r"1700000000\.M250000P\d+Q\d+\.a\\057b\\072c", name)


def test_maildir_size_limit_and_errors(base: Path, who: Identity) -> None:
    with pytest.raises(DeliveryError) as info:
        maildir.deliver(str(base / "shared" / "M") + "/", b"x" * 100, who, hostname="h",
                        size_limit=10)
    assert info.value.dsn == "5.2.2"
    blocker = base / "shared" / "notadir"
    blocker.write_text("")
    with pytest.raises(DeliveryError) as info:
        maildir.deliver(str(blocker) + "/", b"x", who, hostname="h")
    assert info.value.dsn == "4.2.0"
    assert info.value.text.startswith("maildir delivery failed: ")


# -- whose mailbox ------------------------------------------------------------------

ROOT = Identity("root", 0, 0, "/", "/bin/sh")


@pytest.mark.skipif(not IS_ROOT, reason="needs root: a mailbox owned by someone else")
def test_own_mailbox_owned_by_someone_else_is_refused(spool: Path, who: Identity) -> None:
    path = spool / "tester"
    path.write_bytes(b"")
    os.chown(path, 54321, 54321)        # prepared by another user, mode 0666
    os.chmod(path, 0o666)
    with pytest.raises(DeliveryError) as info:
        mailbox.append(str(path), b"secret\n", who, policy(own_mailbox=True))
    assert info.value.temporary
    assert info.value.text == f"cannot open {path}: file is owned by uid 54321, not by tester"
    assert path.read_bytes() == b""
    assert not (spool / "tester.lock").exists()
    to_file(path, b"to a file\n", who)  # a /file destination may belong to anyone
    assert path.read_bytes() == b"to a file\n"


@pytest.mark.skipif(not IS_ROOT, reason="needs root: root's own mailbox")
def test_roots_own_mailbox_is_written_as_root(base: Path, spool: Path) -> None:
    closed = base / "closed"
    closed.mkdir()
    os.chmod(closed, 0o755)
    for directory in (spool, closed):
        path = directory / "root"
        mailbox.append(str(path), b"one\n", ROOT, policy(own_mailbox=True))
        mailbox.append(str(path), b"two\n", ROOT, policy(own_mailbox=True, root_fallback=True))
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
        assert path.read_bytes() == b"one\ntwo\n"
    with pytest.raises(PrivilegeError):       # never for a /file or /dir/ destination
        to_file(closed / "f", b"x", ROOT)
    with pytest.raises(PrivilegeError):
        maildir.deliver(str(closed / "M") + "/", b"x", ROOT, hostname="h")
    box = maildir.deliver(str(closed / "Maildir") + "/", b"x", ROOT, hostname="h",
                          own_mailbox=True)
    assert os.stat(box).st_uid == 0 and os.stat(closed / "Maildir").st_uid == 0


@pytest.mark.skipif(not IS_ROOT, reason="needs root: a Maildir owned by someone else")
def test_own_maildir_owned_by_someone_else_is_refused(base: Path, who: Identity) -> None:
    box = base / "shared" / "tester"
    for sub in ("", "tmp", "new", "cur"):
        (box / sub).mkdir(mode=0o777, exist_ok=True)
        os.chmod(box / sub, 0o777)
        os.chown(box / sub, 54321, 54321)
    with pytest.raises(DeliveryError) as info:
        maildir.deliver(str(box) + "/", b"secret\n", who, hostname="h", own_mailbox=True)
    assert info.value.text == (f"maildir delivery failed: {box}/: owned by uid 54321, "
                               "not by tester")
    assert os.listdir(box / "new") == [] and os.listdir(box / "tmp") == []
