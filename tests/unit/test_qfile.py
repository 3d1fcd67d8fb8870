"""The queue file format and its life cycle (postpy.queue.qfile)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postpy.queue import qfile
from postpy.queue.qfile import (
    BOUNCED,
    DONE,
    END,
    MAGIC,
    PENDING,
    SUCCESS,
    CorruptQueueFile,
    Envelope,
    LogEntry,
    QueueFileWriter,
    Recipient,
    append_log,
    encode_envelope,
    escape,
    read_all,
    read_content,
    read_envelope,
    set_status,
    unescape,
    write_queue_file,
)

CONTENT = b"Received: from x\nSubject: hello\n\nbody line\n.\nE\n\nM00000000000000000001\nlast\n"


def sample_envelope() -> Envelope:
    return Envelope(
        sender="alice@example.org",
        recipients=[
            Recipient("bob@example.net", "Bob@Example.NET", "rfc822;bob@example.net", "SUCCESS,FAILURE"),
            Recipient("carol@example.com"),
            Recipient("dave@example.com", notify="NEVER"),
        ],
        arrival=1756030272.125,
        attrs={"client_addr": "192.0.2.5", "helo": "mail.example.org", "envid": "x=y%z"},
    )


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# -- round trip -----------------------------------------------------------------

def test_round_trip(qdir: Path) -> None:
    env = sample_envelope()
    path = write_queue_file(str(qdir), "ID1", env, CONTENT)
    assert path == str(qdir / "ID1")
    got, content = read_all(path)
    assert content == CONTENT
    assert got.queue_id == "ID1"
    assert got.sender == env.sender and got.arrival == env.arrival and got.attrs == env.attrs
    assert [(r.address, r.orig, r.orcpt, r.notify, r.status, r.index) for r in got.recipients] == [
        (r.address, r.orig, r.orcpt, r.notify, PENDING, i) for i, r in enumerate(env.recipients)]
    assert got.content_length == len(CONTENT)
    assert got.log == []
    assert [r.address for r in got.pending()] == [r.address for r in env.recipients]
    data = (qdir / "ID1").read_bytes()
    assert data.startswith(MAGIC) and data.endswith(END)
    assert data[got.content_offset:got.content_offset + got.content_length] == CONTENT


def test_null_sender_and_empty_content(qdir: Path) -> None:
    env = Envelope("", [Recipient("postmaster")], arrival=0.0)
    got, content = read_all(write_queue_file(str(qdir), "N", env, b""))
    assert got.sender == "" and content == b""


def test_binary_content_and_chunks(qdir: Path) -> None:
    content = bytes(range(256)) * 300
    path = write_queue_file(str(qdir), "B", sample_envelope(), (content[i:i + 999] for i in range(0, len(content), 999)))
    env = read_envelope(path)
    assert b"".join(read_content(path, env, chunk_size=7)) == content


CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f%"


@pytest.mark.parametrize("text", [
    CONTROL,
    "a%b", "%%", "%4", "%zz", "tab\there", "new\nline\r\n", "nul\x00",
    "caf\u00e9 \u4e2d", "bad utf8 \udcff\udc80", "", "=", "a=b",
])
def test_escape_round_trip(text: str) -> None:
    data = escape(text)
    assert not any(b < 0x20 or b == 0x7F for b in data)
    assert b"\t" not in data and b"\n" not in data
    assert unescape(data) == text


@pytest.mark.parametrize("byte", [*range(0x20), 0x25, 0x7F])
def test_every_special_byte_is_escaped(byte: int) -> None:
    assert escape(chr(byte)) == b"%%%02X" % byte


def test_control_bytes_survive_the_file(qdir: Path) -> None:
    env = Envelope(CONTROL + "s", [Recipient(CONTROL + "r", CONTROL, CONTROL, "")],
                   arrival=1.0, attrs={CONTROL.replace("=", ""): CONTROL + "=v"})
    path = write_queue_file(str(qdir), "C", env, b"x\n")
    append_log(path, [LogEntry(0, "delayed", "4.0.0", CONTROL + "\udcfe")])
    got = read_envelope(path)
    assert got.sender == env.sender
    assert got.attrs == env.attrs
    r = got.recipients[0]
    assert (r.address, r.orig, r.orcpt) == (CONTROL + "r", CONTROL, CONTROL)
    assert got.log == [LogEntry(0, "delayed", "4.0.0", CONTROL + "\udcfe")]


@pytest.mark.parametrize("data", [b"%", b"a%4", b"%zz", b"% 4", b"%+4", b"%-1", b"x%g0"])
def test_unescape_malformed(data: bytes) -> None:
    with pytest.raises(CorruptQueueFile, match="bad escape"):
        unescape(data)


def test_attribute_name_with_equals_is_refused(qdir: Path) -> None:
    env = Envelope("s", [Recipient("r")], attrs={"a=b": "c"})
    with pytest.raises(ValueError, match="attribute name"):
        write_queue_file(str(qdir), "A", env, b"")
    assert listing(qdir) == []


@pytest.mark.parametrize("size", range(65500, 65560, 3))
def test_envelope_around_the_first_read(qdir: Path, size: int) -> None:
    """The M record may straddle read_envelope's first 64 KiB read."""
    base = len(encode_envelope(Envelope("", [Recipient("r@x")], arrival=1.0)))
    env = Envelope("s" * (size - base), [Recipient("r@x")], arrival=1.0)
    path = write_queue_file(str(qdir), "BIG", env, b"hi\n")
    got, content = read_all(path)
    assert got.sender == env.sender and content == b"hi\n"
    os.unlink(path)


def test_many_recipients(qdir: Path) -> None:
    env = Envelope("s", [Recipient(f"user{i}@example.org") for i in range(5000)], arrival=2.0)
    got = read_envelope(write_queue_file(str(qdir), "MANY", env, b"x\n"))
    assert [r.address for r in got.recipients] == [r.address for r in env.recipients]


# -- creation: durable, private, all or nothing ----------------------------------

@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_mode_0600_even_with_umask_zero(qdir: Path, umask_zero: None) -> None:
    path = write_queue_file(str(qdir), "M", sample_envelope(), CONTENT)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_mode_is_exact_with_a_strict_umask(qdir: Path) -> None:
    old = os.umask(0o077)
    try:
        path = write_queue_file(str(qdir), "M", sample_envelope(), CONTENT, mode=0o640)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_final_name_only_after_finish(qdir: Path) -> None:
    writer = QueueFileWriter(str(qdir), "F", sample_envelope())
    writer.write(CONTENT[:10])
    assert listing(qdir) == [".F.tmp"]
    writer.write(CONTENT[10:])
    assert not (qdir / "F").exists()
    with pytest.raises(CorruptQueueFile):
        read_envelope(str(qdir / ".F.tmp"))        # unfinished: not a queue file yet
    assert writer.finish() == str(qdir / "F")
    assert listing(qdir) == ["F"]
    assert read_all(str(qdir / "F"))[1] == CONTENT


def test_abort_leaves_nothing(qdir: Path) -> None:
    writer = QueueFileWriter(str(qdir), "X", sample_envelope())
    writer.write(CONTENT)
    writer.abort()
    assert listing(qdir) == []
    writer.abort()                                 # twice is harmless
    assert listing(qdir) == []


def test_failing_content_aborts(qdir: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"part one\n"
        raise OSError("client went away")

    with pytest.raises(OSError, match="client went away"):
        write_queue_file(str(qdir), "Y", sample_envelope(), chunks())
    assert listing(qdir) == []


def test_same_id_twice_is_refused(qdir: Path) -> None:
    writer = QueueFileWriter(str(qdir), "D", sample_envelope())
    with pytest.raises(FileExistsError):
        QueueFileWriter(str(qdir), "D", sample_envelope())
    writer.abort()


def test_not_durable_mode_still_complete(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "ND", sample_envelope(), CONTENT, durable=False)
    assert read_all(path)[1] == CONTENT


# -- truncated and garbled files ---------------------------------------------------

def complete_file(qdir: Path) -> bytes:
    return Path(write_queue_file(str(qdir), "T", sample_envelope(), CONTENT)).read_bytes()


def test_truncated_at_every_offset(qdir: Path) -> None:
    data = complete_file(qdir)
    victim = qdir / "cut"
    for n in range(len(data)):
        victim.write_bytes(data[:n])
        with pytest.raises(CorruptQueueFile):
            read_envelope(str(victim))
        with pytest.raises(CorruptQueueFile):
            read_all(str(victim))
    victim.write_bytes(data)
    assert read_all(str(victim))[1] == CONTENT


def test_torn_log_at_every_offset_is_ignored(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "L", sample_envelope(), CONTENT)
    complete = len(Path(path).read_bytes())
    entries = [LogEntry(0, "delayed", "4.4.1", "connect to mx: refused"),
               LogEntry(1, "delivered", "2.0.0", "250 ok %done")]
    append_log(path, entries)
    data = Path(path).read_bytes()
    ends = [i + 1 for i in range(complete, len(data)) if data[i:i + 1] == b"\n"]
    for n in range(complete, len(data) + 1):
        Path(path).write_bytes(data[:n])
        got = read_envelope(path)
        assert got.log == entries[:sum(1 for e in ends if e <= n)]


def test_torn_appended_record_ignored(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "L", sample_envelope(), CONTENT)
    append_log(path, [LogEntry(0, "delayed", "4.4.1", "later")])
    with open(path, "ab") as fh:
        fh.write(b"L1\tdelivered\t2.0")
    assert read_envelope(path).log == [LogEntry(0, "delayed", "4.4.1", "later")]


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


GARBLED = [
    ("bad magic", lambda d: _replace(d, b"POSTPY-Q1", b"POSTPY-Q2"), "bad magic"),
    ("empty file", lambda d: b"", "bad magic"),
    ("unknown record", lambda d: _replace(d, b"\nS", b"\nXjunk\nS"), "unknown record type b'X'"),
    ("empty line", lambda d: _replace(d, b"\nS", b"\n\nS"), "unknown record type"),
    ("nan arrival", lambda d: _replace(d, b"T1756030272.125000", b"Tnan"), "bad arrival time"),
    ("text arrival", lambda d: _replace(d, b"T1756030272.125000", b"Tsoon"), "bad arrival time"),
    ("huge arrival", lambda d: _replace(d, b"T1756030272.125000", b"T1e999"), "bad arrival time"),
    ("no arrival", lambda d: _replace(d, b"T1756030272.125000\n", b""), "missing sender or arrival"),
    ("no sender", lambda d: _replace(d, b"Salice@example.org\n", b""), "missing sender or arrival"),
    ("bad status", lambda d: _replace(d, b"R-bob", b"RZbob"), "bad recipient record"),
    ("short recipient", lambda d: _replace(d, b"R-carol@example.com\t\t\t\n", b"R-carol@example.com\t\t\n"),
     "bad recipient record"),
    ("long recipient", lambda d: _replace(d, b"\tNEVER\n", b"\tNEVER\tx\n"), "bad recipient record"),
    ("empty recipient", lambda d: _replace(d, b"R-carol@example.com\t\t\t\n", b"R\n"), "bad recipient record"),
    ("attr without =", lambda d: _replace(d, b"Ahelo=mail", b"Ahelo:mail"), "bad attribute record"),
    ("bad escape", lambda d: _replace(d, b"Salice", b"Sal%Gice"), "bad escape"),
    ("short length", lambda d: _replace(d, b"M000", b"M00"), "bad content length record"),
    ("letter in length", lambda d: _replace(d, b"M000", b"Mx00"), "bad content length record"),
    ("length too big", lambda d: _replace(d, b"M000", b"M100"), "truncated content"),
    ("length too small", lambda d: _replace(d, b"M%020d" % len(CONTENT), b"M%020d" % (len(CONTENT) - 1)),
     "missing end marker"),
    ("no end marker", lambda d: d[:-2] + b"X\n", "missing end marker"),
    ("bad log kind", lambda d: d + b"Q0\tdelayed\t4.0.0\tx\n", "bad log record"),
    ("bad log index", lambda d: d + b"Lx\tdelayed\t4.0.0\tx\n", "bad log record"),
    ("log fields", lambda d: d + b"L0\tdelayed\t4.0.0\n", "bad log record"),
    ("log unknown rcpt", lambda d: d + b"L3\tdelayed\t4.0.0\tx\n", "log record for unknown recipient"),
    ("log index of 5000 digits", lambda d: d + b"L" + b"9" * 5000 + b"\tfailed\t5.0.0\tx\n",
     "bad log record"),
    ("log index of 10 digits", lambda d: d + b"L0000000000\tfailed\t5.0.0\tx\n", "bad log record"),
    ("log index not ASCII", lambda d: d + "L\u0661\tfailed\t5.0.0\tx\n".encode(), "bad log record"),
    ("log bad escape", lambda d: d + b"L0\tdelayed\t4.0.0\tx%\n", "bad escape"),
    ("garbage after end", lambda d: d + b"\x00\x00\x00\n", "bad log record"),
]


@pytest.mark.parametrize("label, mutate, message", GARBLED, ids=[g[0] for g in GARBLED])
def test_garbled(qdir: Path, label: str, mutate: Callable[[bytes], bytes], message: str) -> None:
    data = complete_file(qdir)
    victim = qdir / "bad"
    victim.write_bytes(mutate(data))
    with pytest.raises(CorruptQueueFile, match=message):
        read_all(str(victim))


def test_envelope_limit_bounds_what_is_read(qdir: Path) -> None:
    """A reader given envelope_limit refuses longer envelope records before
    parsing them (no memory for a million recipients it could never use)."""
    env = Envelope("a", [Recipient(f"r{i}@example.net") for i in range(2000)], arrival=1.0)
    path = write_queue_file(str(qdir), "many", env, b"Subject: x\n\n")
    head = len(qfile.encode_envelope(env))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptQueueFile, match=f"envelope larger than {head // 2} bytes"):
            qfile.read_envelope_fd(fd, "many", envelope_limit=head // 2)
        assert len(qfile.read_envelope_fd(fd, "many", envelope_limit=head + 30).recipients) == 2000
    finally:
        os.close(fd)


def test_no_recipients_is_corrupt(qdir: Path) -> None:
    data = MAGIC + b"T1.0\nSs\nM%020d\n" % 2 + b"x\n" + END
    (qdir / "nr").write_bytes(data)
    with pytest.raises(CorruptQueueFile, match="no recipients"):
        read_envelope(str(qdir / "nr"))


def test_every_single_byte_flip_is_safe(qdir: Path) -> None:
    """Any one garbled byte gives a result or CorruptQueueFile, never another exception."""
    data = complete_file(qdir)
    victim = qdir / "flip"
    for i in range(len(data)):
        for new in (0x00, 0x0A, 0x25, 0x09, 0xFF):
            victim.write_bytes(data[:i] + bytes((new,)) + data[i + 1:])
            try:
                env, _ = read_all(str(victim))
            except CorruptQueueFile:
                continue
            assert env.recipients


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        read_envelope("/nonexistent/queue/file")


# -- in-place updates ------------------------------------------------------------

def test_set_status_in_place(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "S", sample_envelope(), CONTENT)
    before = Path(path).read_bytes()
    inode = os.stat(path).st_ino
    env = read_envelope(path)
    set_status(path, [env.recipients[0], env.recipients[2]], DONE)
    assert env.recipients[0].status == DONE
    after = Path(path).read_bytes()
    assert os.stat(path).st_ino == inode and len(after) == len(before)
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed == [env.recipients[0].offset, env.recipients[2].offset]
    got = read_envelope(path)
    assert [r.status for r in got.recipients] == [DONE, PENDING, DONE]
    assert [r.address for r in got.pending()] == ["carol@example.com"]
    for status in (BOUNCED, SUCCESS, PENDING):
        set_status(path, [got.recipients[1]], status, durable=False)
        assert read_envelope(path).recipients[1].status == status


def test_set_status_rejects_unknown_status(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "S", sample_envelope(), CONTENT)
    before = Path(path).read_bytes()
    env = read_envelope(path)
    with pytest.raises(ValueError, match="bad recipient status"):
        set_status(path, env.recipients, "X")
    assert Path(path).read_bytes() == before


def test_append_log_and_newest_wins(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "G", sample_envelope(), CONTENT)
    append_log(path, [])
    assert Path(path).read_bytes().endswith(END)
    append_log(path, [LogEntry(1, "delayed", "4.4.1", "first")])
    append_log(path, [LogEntry(1, "delivered", "2.0.0", "second"), LogEntry(0, "failed", "5.1.1", "no")],
               durable=False)
    env = read_envelope(path)
    assert [e.text for e in env.log] == ["first", "second", "no"]
    assert env.last_log()[1].action == "delivered" and env.last_log()[0].dsn == "5.1.1"
    assert read_all(path)[1] == CONTENT


def test_status_offsets_point_at_status_bytes(qdir: Path) -> None:
    path = write_queue_file(str(qdir), "O", sample_envelope(), CONTENT)
    data = Path(path).read_bytes()
    for rcpt in read_envelope(path).recipients:
        assert data[rcpt.offset - 1:rcpt.offset + 1] == b"R" + PENDING.encode()


def test_module_documents_every_record_kind() -> None:
    doc = qfile.__doc__ or ""
    for kind in ("T<arrival", "S<sender>", "A<name>", "R<st>", "M<content", "E\\n", "L<index>"):
        assert kind in doc


def test_record_results_writes_statuses_and_log_in_one_go(tmp_path):
    env = qfile.Envelope("s@x", [qfile.Recipient("a@x"), qfile.Recipient("b@x"), qfile.Recipient("c@x")],
                         arrival=1.0)
    path = qfile.write_queue_file(str(tmp_path), "5BRW00000Bz1", env, b"\n")
    got = qfile.read_envelope(path)
    a, b, c = got.recipients
    qfile.record_results(path, {qfile.DONE: [a], qfile.BOUNCED: [b]},
                         [qfile.LogEntry(1, "failed", "5.1.1", "no such user"),
                          qfile.LogEntry(2, "delayed", "4.4.1", "connection refused")])
    assert (a.status, b.status, c.status) == (qfile.DONE, qfile.BOUNCED, qfile.PENDING)
    again = qfile.read_envelope(path)
    assert [r.status for r in again.recipients] == [qfile.DONE, qfile.BOUNCED, qfile.PENDING]
    assert [(e.index, e.action, e.text) for e in again.log] == [
        (1, "failed", "no such user"), (2, "delayed", "connection refused")]
    with pytest.raises(ValueError):
        qfile.record_results(path, {"?": [c]}, [])


def test_finish_syncs_file_then_renames_then_syncs_directory(tmp_path, monkeypatch):
    """The durability rule: data on disk before the name, the name on disk
    before finish() returns (and so before any 250 or exit 0)."""
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        import stat as st
        calls.append("fsync-dir" if st.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        calls.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(qfile.os, "fsync", fsync)
    monkeypatch.setattr(qfile.os, "rename", rename)
    env = qfile.Envelope("s@x", [qfile.Recipient("a@x")], arrival=1.0)
    writer = qfile.QueueFileWriter(str(tmp_path), "5BRW00000Bz2", env)
    writer.write(b"Subject: x\n\nbody\n")
    assert calls == [] and not (tmp_path / "5BRW00000Bz2").exists()
    writer.finish()
    assert calls == ["fsync-file", "rename", "fsync-dir"]
