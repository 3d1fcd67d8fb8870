"""The queue file: one file per message, the single definition of its format.

Writers: cleanup (new files in ``incoming/``), sendmail (``maildrop/``, read
by pickup), qmgr (recipient status in place, appended log records).
Readers: qmgr, delivery agents, bounce, postqueue, postcat, postsuper.

Format
------
A text envelope, the content, an end marker, then appended records::

    POSTPY-Q1\\n                      magic and version
    T<arrival epoch seconds>\\n        arrival time (float)
    S<sender>\\n                       envelope sender; empty for <>
    A<name>=<value>\\n                 attribute (client_addr, helo, envid, ret, ...;
                                      content_filter: qmgr sends every recipient
                                      to this transport:nexthop instead)
    R<st><address>\\t<orig>\\t<orcpt>\\t<notify>\\n      one per recipient
    M<content length, 20 digits>\\n    start of content
    <content length bytes>            the message, header and body, LF line ends
    E\\n                               end marker: the file is complete
    L<index>\\t<action>\\t<dsn>\\t<text>\\n   appended: a result for recipient #index

Every payload field is percent-escaped (``%``, LF, CR, TAB, NUL and other
control bytes as ``%XX``), so records never contain a raw newline; text is
UTF-8 (other bytes survive as surrogate escapes).

``<st>``, the recipient status byte, is the only byte ever rewritten in
place: ``-`` pending, ``D`` done (delivered, or dropped), ``B`` bounced (a
failure notice is still owed), ``S`` delivered with a success notice owed
(NOTIFY=SUCCESS).  Changing it is one pwrite and one fsync, so a crash
never loses a recorded delivery, and never needs the file rewritten.

``L`` records are appended with O_APPEND (action ``delayed``, ``failed``,
``delivered`` or ``relayed``, as in RFC 3464).  A torn last record (no
newline) is ignored; the newest record for a recipient wins.

Durability
----------
:class:`QueueFileWriter` writes ``.<id>.tmp`` beside the final name, fsyncs
it, renames it to ``<id>`` and fsyncs the directory.  A file therefore has
its final name only when complete, and its ``E`` marker proves it again on
read.  A file that fails to parse raises :class:`CorruptQueueFile`, and nothing
else: every number is bounded in digits before it is converted (arrival
time, content length, log index), so no input makes a reader raise
``ValueError`` or spend quadratic time.  Callers
hand it to :func:`postpy.queue.layout.quarantine`, which moves it to
``corrupt/`` and logs why, so a reader never crashes on it.

Deferred files carry their next retry time as their mtime.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MAGIC = b"POSTPY-Q1\n"
LENGTH_WIDTH = 20
END = b"E\n"

PENDING, DONE, BOUNCED, SUCCESS = "-", "D", "B", "S"
STATUSES = (PENDING, DONE, BOUNCED, SUCCESS)
ENVELOPE_LIMIT = 64 * 1024 * 1024
INDEX_DIGITS = 9                # an L record's recipient index: fewer than a billion


class CorruptQueueFile(Exception):
    """The file is not a complete, well-formed queue file."""


def escape(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if not any(b < 0x20 or b in (0x25, 0x7F) for b in data):
        return data
    return b"".join(b"%%%02X" % b if (b < 0x20 or b in (0x25, 0x7F)) else bytes((b,)) for b in data)


_HEX = b"0123456789ABCDEFabcdef"
_ARRIVAL = re.compile(rb"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def unescape(data: bytes) -> str:
    if b"%" not in data:
        return data.decode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x25:
            digits = data[i + 1:i + 3]
            if len(digits) != 2 or not all(c in _HEX for c in digits):
                raise CorruptQueueFile("bad escape in record")
            out.append(int(digits, 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "surrogateescape")


@dataclass
class Recipient:
    address: str
    orig: str = ""          # address as first received (orig_to), if different
    orcpt: str = ""         # DSN ORCPT (RFC 3461), e.g. "rfc822;user@example"
    notify: str = ""        # DSN NOTIFY: "", "NEVER" or a comma list of SUCCESS,DELAY,FAILURE
    status: str = PENDING
    offset: int = 0         # file offset of the status byte (set by the reader)
    index: int = 0          # position among the file's recipients


@dataclass
class LogEntry:
    index: int
    action: str             # delayed | failed | delivered | relayed | expanded
    dsn: str                # X.Y.Z
    text: str


@dataclass
class Envelope:
    sender: str
    recipients: list[Recipient]
    arrival: float = 0.0
    attrs: dict[str, str] = field(default_factory=dict)
    queue_id: str = ""
    content_offset: int = 0
    content_length: int = 0
    log: list[LogEntry] = field(default_factory=list)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == PENDING]

    def last_log(self) -> dict[int, LogEntry]:
        """Newest log entry per recipient index."""
        return {entry.index: entry for entry in self.log}


def _record(kind: bytes, *fields: str) -> bytes:
    return kind + b"\t".join(escape(f) for f in fields) + b"\n"


def encode_envelope(env: Envelope) -> bytes:
    parts = [MAGIC, b"T%.6f\n" % env.arrival, _record(b"S", env.sender)]
    for name, value in env.attrs.items():
        if "=" in name:
            raise ValueError(f"attribute name with '=': {name!r}")
        parts.append(b"A" + escape(name) + b"=" + escape(value) + b"\n")
    for rcpt in env.recipients:
        parts.append(b"R" + rcpt.status.encode() + b"\t".join(
            escape(f) for f in (rcpt.address, rcpt.orig, rcpt.orcpt, rcpt.notify)) + b"\n")
    return b"".join(parts)


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class QueueFileWriter:
    """Write one new queue file; nothing bears its final name until finish().

    >>> w = QueueFileWriter(directory, queue_id, envelope)
    >>> w.write(b"Subject: x\\n\\nbody\\n")
    >>> w.finish()          # fsync file, rename, fsync directory
    """

    def __init__(self, directory: str, queue_id: str, envelope: Envelope, *,
                 mode: int = 0o600, durable: bool = True) -> None:
        self.directory = directory
        self.queue_id = queue_id
        self.path = os.path.join(directory, queue_id)
        self.tmp_path = os.path.join(directory, f".{queue_id}.tmp")
        self.durable = durable
        self.length = 0
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(self._fd, mode)   # the umask must not widen or narrow it
            head = encode_envelope(envelope)
            self._length_at = len(head) + 1
            self._write(head + b"M" + b"0" * LENGTH_WIDTH + b"\n")
        except BaseException:
            self.abort()
            raise

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def write(self, data: bytes) -> None:
        """Append content bytes (header and body, LF line ends)."""
        self._write(data)
        self.length += len(data)

    def finish_in(self, directory: str) -> str:
        """:meth:`finish`, with the final name in ``directory`` instead: another
        queue directory of the same file system (cleanup puts a message that
        content checks HOLD in hold/)."""
        self.directory, self.path = directory, os.path.join(directory, self.queue_id)
        return self.finish()

    def finish(self) -> str:
        """Complete the file durably; return its final path."""
        try:
            self._write(END)
            os.pwrite(self._fd, b"%0*d" % (LENGTH_WIDTH, self.length), self._length_at)
            if self.durable:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self.tmp_path, self.path)
            if self.durable:
                fsync_directory(self.directory)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file (a client went away, a limit was hit)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


def write_queue_file(directory: str, queue_id: str, envelope: Envelope,
                     content: bytes | Iterable[bytes], **kwargs: object) -> str:
    writer = QueueFileWriter(directory, queue_id, envelope, **kwargs)  # type: ignore[arg-type]
    try:
        for chunk in ([content] if isinstance(content, bytes) else content):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def _parse(data: bytes, queue_id: str, *, envelope_only: bool, file_size: int) -> Envelope:
    if not data.startswith(MAGIC):
        raise CorruptQueueFile("bad magic (not a queue file)")
    env = Envelope(sender="", recipients=[], queue_id=queue_id)
    pos = len(MAGIC)
    seen_sender = seen_time = False
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise CorruptQueueFile("truncated envelope")
        kind, payload = data[pos:pos + 1], data[pos + 1:nl]
        rec_offset = pos
        pos = nl + 1
        if kind == b"T":
            if not _ARRIVAL.fullmatch(payload):     # float() would take "nan", "inf", "1_0"
                raise CorruptQueueFile("bad arrival time record")
            env.arrival = float(payload)
            seen_time = True
        elif kind == b"S":
            env.sender = unescape(payload)
            seen_sender = True
        elif kind == b"A":
            name, eq, value = payload.partition(b"=")
            if not eq:
                raise CorruptQueueFile("bad attribute record")
            env.attrs[unescape(name)] = unescape(value)
        elif kind == b"R":
            status = payload[:1].decode("ascii", "replace")
            fields = payload[1:].split(b"\t")
            if status not in STATUSES or len(fields) != 4:
                raise CorruptQueueFile("bad recipient record")
            address, orig, orcpt, notify = (unescape(f) for f in fields)
            env.recipients.append(Recipient(address, orig, orcpt, notify, status,
                                            rec_offset + 1, len(env.recipients)))
        elif kind == b"M":
            if len(payload) != LENGTH_WIDTH or not payload.isdigit():
                raise CorruptQueueFile("bad content length record")
            env.content_offset = pos
            env.content_length = int(payload)
            break
        else:
            raise CorruptQueueFile(f"unknown record type {kind!r}")
    if not (seen_sender and seen_time):
        raise CorruptQueueFile("missing sender or arrival record")
    if not env.recipients:
        raise CorruptQueueFile("no recipients")
    end = env.content_offset + env.content_length
    if file_size < end + len(END):
        raise CorruptQueueFile("truncated content")
    if envelope_only:
        return env
    if data[end:end + len(END)] != END:
        raise CorruptQueueFile("missing end marker")
    env.log = _parse_log(data[end + len(END):], len(env.recipients))
    return env


def _parse_log(data: bytes, nrecipients: int) -> list[LogEntry]:
    """Appended L records after the end marker; a torn last one is ignored."""
    entries: list[LogEntry] = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break                                  # torn append: ignore
        kind, payload = data[pos:pos + 1], data[pos + 1:nl]
        pos = nl + 1
        fields = payload.split(b"\t")
        # Bound the digits before converting: int() of thousands of digits
        # raises ValueError (and costs quadratic time below the limit).
        if (kind != b"L" or len(fields) != 4 or not fields[0].isdigit()
                or len(fields[0]) > INDEX_DIGITS):
            raise CorruptQueueFile("bad log record")
        index = int(fields[0])
        if index >= nrecipients:
            raise CorruptQueueFile("log record for unknown recipient")
        entries.append(LogEntry(index, *(unescape(f) for f in fields[1:])))
    return entries


def _has_length_record(head: bytes) -> bool:
    """True when ``head`` holds the whole ``M`` record (it may straddle a read)."""
    at = head.find(b"\nM")
    return at >= 0 and head.find(b"\n", at + 1) >= 0


def _pread(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 20), offset)
        if not chunk:
            break
        parts.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def read_envelope_fd(fd: int, name: str, *, tail_limit: int | None = None,
                     envelope_limit: int = ENVELOPE_LIMIT) -> Envelope:
    """Read and check everything but the content bytes, through an open descriptor.

    For readers that must not reopen a file by name (pickup: a user could swap
    it).  ``tail_limit`` bounds the bytes accepted after the content,
    ``envelope_limit`` those of the records before it (and so the memory
    the parsed envelope takes).
    """
    size = os.fstat(fd).st_size
    head = _pread(fd, min(size, 65536, envelope_limit), 0)
    while not _has_length_record(head) and len(head) < min(size, envelope_limit):
        more = _pread(fd, min(len(head), envelope_limit - len(head)), len(head))
        if not more:
            break
        head += more
    if not _has_length_record(head) and len(head) >= envelope_limit:
        raise CorruptQueueFile(f"envelope larger than {envelope_limit} bytes")
    env = _parse(head, name, envelope_only=True, file_size=size)
    end = env.content_offset + env.content_length
    if tail_limit is not None and size - end > tail_limit:
        raise CorruptQueueFile("too much data after the content")
    tail = _pread(fd, size - end, end)
    if tail[:len(END)] != END:
        raise CorruptQueueFile("missing end marker")
    env.log = _parse_log(tail[len(END):], len(env.recipients))
    return env


def read_envelope(path: str) -> Envelope:
    """Read and check everything but the content bytes.

    Raises CorruptQueueFile for a malformed file, FileNotFoundError when it
    is gone (another process moved it: not an error).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_envelope_fd(fd, os.path.basename(path))
    finally:
        os.close(fd)


def read_content(path: str, env: Envelope, chunk_size: int = 65536) -> Iterator[bytes]:
    """The message content, in chunks, exactly as stored."""
    with open(path, "rb") as fh:
        fh.seek(env.content_offset)
        remaining = env.content_length
        while remaining:
            chunk = fh.read(min(chunk_size, remaining))
            if not chunk:
                raise CorruptQueueFile("truncated content")
            remaining -= len(chunk)
            yield chunk


def read_all(path: str) -> tuple[Envelope, bytes]:
    env = read_envelope(path)
    return env, b"".join(read_content(path, env))


def set_status(path: str, recipients: Iterable[Recipient], status: str, *, durable: bool = True) -> None:
    """Rewrite the status byte of these recipients in place, then fsync once."""
    if status not in STATUSES:
        raise ValueError(f"bad recipient status {status!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for rcpt in recipients:
            os.pwrite(fd, status.encode(), rcpt.offset)
            rcpt.status = status
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def append_log(path: str, entries: Iterable[LogEntry], *, durable: bool = True) -> None:
    """Append result records (one write, O_APPEND)."""
    data = b"".join(_record(b"L", str(e.index), e.action, e.dsn, e.text) for e in entries)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def record_results(path: str, statuses: dict[str, list[Recipient]], entries: Iterable[LogEntry],
                   *, durable: bool = True) -> None:
    """qmgr's one write per batch of results: status bytes in place and
    ``L`` records appended, made durable with a single fsync."""
    for status in statuses:
        if status not in STATUSES:
            raise ValueError(f"bad recipient status {status!r}")
    data = b"".join(_record(b"L", str(e.index), e.action, e.dsn, e.text) for e in entries)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for status, rcpts in statuses.items():
            for rcpt in rcpts:
                os.pwrite(fd, status.encode(), rcpt.offset)
        if data:
            # O_APPEND on a second descriptor: pwrite ignores offsets on
            # O_APPEND descriptors in Linux, so status bytes need the first.
            afd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(afd, data)
            finally:
                os.close(afd)
        if durable:
            os.fsync(fd)        # one fsync covers the inode, whichever descriptor wrote
    finally:
        os.close(fd)
    for status, rcpts in statuses.items():
        for rcpt in rcpts:
            rcpt.status = status
