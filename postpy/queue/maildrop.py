"""maildrop/: the local submission drop box, its writer and its reader.

Writer: the ``sendmail`` command (:func:`submit_to_maildrop`), running as
the submitting user with no privileges at all.  Reader: pickup
(:func:`read_submission`), running as mail_owner, which hands each file to
cleanup and removes it.  A submission file uses the queue file format of
:mod:`postpy.queue.qfile` (envelope records, ``M`` length, content, ``E``).

Threat model
------------
Python programs cannot be setgid, so there is no trusted ``postdrop``
helper between an untrusted local user and the queue.  Instead:

* ``maildrop/`` is owned by mail_owner, mode ``1733``.  Any user may create
  a file in it; nobody but mail_owner may list it; the sticky bit means a
  user may rename or remove only their own files.
* **Identity** comes from the kernel: pickup attributes a file to its owner
  (``st_uid`` of the open file), never to anything written inside it.  A
  ``uid``, ``client_addr`` or other attribute in the file is ignored: pickup
  forwards only :data:`SUBMISSION_ATTRS`.  The envelope sender is the
  user's choice (as with ``sendmail -f``), but every message is logged
  with ``uid=N`` and carries ``Received: ... from userid N``.
* **Confidentiality**: pickup is not the file's owner, so a finished file
  must be world-readable (``0644``).  What keeps other users out is its
  name: 128 random bits after the queue ID, in a directory they cannot
  list.  While it is written the file is ``0600`` and has a dot name
  (``.<name>.tmp``) that pickup ignores.
* **Integrity / completeness**: the writer fsyncs the file, makes it
  readable, renames it to its final name and makes the rename durable
  before ``sendmail`` reports success, so a file with a final name is
  complete (its ``E`` marker proves it again).  An ordinary user cannot
  open ``maildrop/`` to fsync it (no read permission), so the file itself
  is fsynced again after the rename (see :class:`_MaildropWriter`).  pickup removes it only after
  cleanup answered that the queue file is durable: a crash can duplicate
  a message, never lose one.  While the mail system is down, files wait
  here and pickup picks them up when it starts.
* **Attacks on pickup** (see :mod:`postpy.pickup.service`): symlinks
  (``lstat`` first, then ``O_NOFOLLOW``), FIFOs and devices (only regular
  files are opened, ``O_NONBLOCK`` in case of a swap), a swap between
  ``lstat`` and ``open`` (device and inode compared), hard links to other
  people's files (``st_nlink`` must be 1: a link to someone's file would
  otherwise be attributed to that someone), re-opening by name (never: the
  file is read through the one descriptor).  Malformed files go to
  ``corrupt/`` with a log line, whatever is wrong with them: the reader
  raises nothing but ``CorruptQueueFile`` and bounds every number before
  converting it.  Size is bounded by cleanup's message_size_limit; the
  envelope must fit in one ipc frame to cleanup (``ipc_max_frame``), and
  one that does not (too many recipients) is returned to its sender.
* Not defended: a user filling the disk through maildrop (as with
  Postfix; use quotas), and ``authorized_submit_users``, which sendmail
  checks but a user writing the directory directly bypasses (pickup
  would have to check it by uid; not done yet).

File names are ``<queue ID>.<32 hex digits>``; pickup accepts any name
that does not start with a dot (``postsuper -r`` moves queue files here
under their queue ID).  A submission must have at least one recipient
(``sendmail -t`` extracts them itself, for its exit status, and also
passes ``extract=yes`` so cleanup removes ``Bcc:``).

This module is imported by ``sendmail``: keep its imports cheap.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from postpy.ipc.trigger import WAKEUP, send_trigger
from postpy.queue import qfile
from postpy.queue.qid import new_queue_id

MAILDROP = "maildrop"
PICKUP_SOCKET = "public/pickup"
FILE_MODE = 0o644
WRITE_MODE = 0o600
TAIL_LIMIT = 1024 * 1024        # bytes allowed after the content (L records of a requeued file)

# Attributes a submitter may set; pickup forwards only these to cleanup.
SUBMISSION_ATTRS = frozenset({"full_name", "extract", "envid", "ret", "body", "smtputf8"})
_ATTR_VALUES = {
    "extract": ("yes", "no"),
    "ret": ("FULL", "HDRS"),
    "body": ("7BIT", "8BITMIME", "BINARYMIME"),
    "smtputf8": ("yes", "no"),
}
_NOTIFY_WORDS = frozenset({"SUCCESS", "DELAY", "FAILURE"})


class MaildropError(Exception):
    """The submission could not be written (sendmail: EX_TEMPFAIL)."""


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def check_notify(value: str) -> bool:
    """DSN NOTIFY (RFC 3461 section 4.1): empty, NEVER, or SUCCESS/DELAY/FAILURE."""
    if value in ("", "NEVER"):
        return True
    words = value.split(",")
    return len(set(words)) == len(words) and all(w in _NOTIFY_WORDS for w in words)


def check_attr(name: str, value: str) -> str | None:
    """Why a submission attribute is unacceptable, or None when it is fine."""
    if name not in SUBMISSION_ATTRS:
        return f"unknown submission attribute {name}"
    if _has_control(value):
        return f"control character in attribute {name}"
    allowed = _ATTR_VALUES.get(name)
    if allowed is not None and value not in allowed:
        return f"bad value for attribute {name}: {value[:40]!r}"
    if name == "envid" and not (0 < len(value) <= 100 and all(0x21 <= ord(c) <= 0x7E for c in value)):
        return "bad envid: 1 to 100 printable ASCII characters"
    if name == "full_name" and len(value) > 1000:
        return "full_name longer than 1000 characters"
    return None


# -- writer (sendmail) -------------------------------------------------------


class _MaildropWriter(qfile.QueueFileWriter):
    """A queue file writer for a directory the writer may not read.

    Differences from :meth:`QueueFileWriter.finish`: the file is made
    readable for pickup before it gets its final name, and the rename is
    made durable without opening ``maildrop/`` (mode 1733: an ordinary user
    cannot open it to fsync it).  After the rename the file is fsynced
    again: the rename changed the inode (its ctime), so ext4, XFS and btrfs
    commit the transaction holding the new name with it.  When the
    directory can be opened (root, mail_owner) it is fsynced as usual.
    """

    def finish(self) -> str:
        renamed = False
        try:
            self._write(qfile.END)
            os.pwrite(self._fd, b"%0*d" % (qfile.LENGTH_WIDTH, self.length), self._length_at)
            os.fchmod(self._fd, FILE_MODE)
            os.fsync(self._fd)
            os.rename(self.tmp_path, self.path)
            renamed = True
            try:
                qfile.fsync_directory(self.directory)
            except PermissionError:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        except BaseException:
            self.abort()
            if renamed:       # not known to be durable: the caller reports failure
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            raise
        return self.path


def _recipient(value: str | qfile.Recipient) -> qfile.Recipient:
    rcpt = qfile.Recipient(value) if isinstance(value, str) else value
    if not rcpt.address or any(_has_control(f) for f in (rcpt.address, rcpt.orcpt, rcpt.notify)):
        raise ValueError(f"bad recipient address: {rcpt.address!r}")
    if not check_notify(rcpt.notify):
        raise ValueError(f"bad DSN NOTIFY value: {rcpt.notify!r}")
    return qfile.Recipient(rcpt.address, "", rcpt.orcpt, rcpt.notify)


def submit_to_maildrop(queue_directory: str, sender: str,
                       recipients: Iterable[str | qfile.Recipient],
                       content_chunks: bytes | Iterable[bytes],
                       attrs: dict[str, str] | None = None, *, trigger: bool = True) -> str:
    """Write one submission durably into maildrop/, wake pickup; return the file name.

    ``content_chunks`` is the message (header and body, LF line ends).
    Raises ValueError for bad arguments (sendmail: EX_DATAERR/EX_USAGE) and
    :class:`MaildropError` when the file cannot be written (EX_TEMPFAIL).
    Exhausting ``content_chunks`` may raise; then nothing is left behind.
    """
    attrs = dict(attrs or {})
    for name, value in attrs.items():
        problem = check_attr(name, value)
        if problem:
            raise ValueError(problem)
    if _has_control(sender):
        raise ValueError(f"bad sender address: {sender!r}")
    rcpts = [_recipient(r) for r in recipients]
    if not rcpts:
        raise ValueError("no recipients")
    name = f"{new_queue_id()}.{os.urandom(16).hex()}"
    directory = os.path.join(queue_directory, MAILDROP)
    envelope = qfile.Envelope(sender, rcpts, arrival=time.time(), attrs=attrs)
    try:
        writer = _MaildropWriter(directory, name, envelope, mode=WRITE_MODE)
    except OSError as exc:
        raise MaildropError(f"cannot create file in {directory}: {exc.strerror}") from None
    try:
        for chunk in ([content_chunks] if isinstance(content_chunks, bytes) else content_chunks):
            writer.write(chunk)
        writer.finish()
    except OSError as exc:
        writer.abort()
        raise MaildropError(f"cannot write file in {directory}: {exc.strerror}") from None
    except BaseException:
        writer.abort()
        raise
    if trigger:
        wake_pickup(queue_directory)
    return name


def wake_pickup(queue_directory: str) -> bool:
    """Trigger public/pickup; False when it is not running (the file waits)."""
    path = os.path.join(queue_directory, PICKUP_SOCKET)
    if len(os.fsencode(path)) < 100:
        return send_trigger(path, WAKEUP)
    # sun_path holds about 107 bytes: go there and use the short relative name.
    here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(queue_directory)
        return send_trigger(PICKUP_SOCKET, WAKEUP)
    except OSError:
        return False
    finally:
        os.fchdir(here)
        os.close(here)


# -- reader (pickup) ---------------------------------------------------------


@dataclass
class Submission:
    name: str                           # file name in maildrop/
    uid: int                            # owner of the file (the kernel's word)
    sender: str
    recipients: list[qfile.Recipient]   # those still pending
    attrs: dict[str, str]               # SUBMISSION_ATTRS only, checked
    content_offset: int
    content_length: int


def open_checked(directory: str, name: str) -> tuple[int, os.stat_result]:
    """Open a maildrop file safely; raise CorruptQueueFile saying why not.

    FileNotFoundError when it vanished (not an error).  The caller owns the
    returned descriptor.
    """
    path = os.path.join(directory, name)
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise qfile.CorruptQueueFile("not a regular file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise qfile.CorruptQueueFile(f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(st.st_mode):
            raise qfile.CorruptQueueFile("file replaced while being opened")
        if st.st_nlink != 1:
            raise qfile.CorruptQueueFile(f"file has {st.st_nlink} hard links")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_submission(fd: int, st: os.stat_result, name: str, *,
                    envelope_limit: int = qfile.ENVELOPE_LIMIT) -> Submission:
    """Parse a submission through its descriptor, strictly; CorruptQueueFile
    if bad, and no other exception whatever the bytes.

    ``envelope_limit`` bounds the envelope records read (pickup: a few times
    the ipc frame limit, beyond which the envelope could never be sent).
    """
    env = qfile.read_envelope_fd(fd, name, tail_limit=TAIL_LIMIT, envelope_limit=envelope_limit)
    if _has_control(env.sender):
        raise qfile.CorruptQueueFile("control character in sender")
    pending = []
    for rcpt in env.recipients:
        if any(_has_control(f) for f in (rcpt.address, rcpt.orig, rcpt.orcpt)) or not rcpt.address:
            raise qfile.CorruptQueueFile("bad recipient address")
        if not check_notify(rcpt.notify):
            raise qfile.CorruptQueueFile(f"bad DSN NOTIFY value {rcpt.notify[:40]!r}")
        if rcpt.status == qfile.PENDING:      # a requeued file keeps its done ones
            pending.append(rcpt)
    if not pending:
        raise qfile.CorruptQueueFile("no pending recipients")
    attrs = {}
    for key, value in env.attrs.items():
        if key not in SUBMISSION_ATTRS:
            continue                          # uid, client_addr, ...: never trusted
        problem = check_attr(key, value)
        if problem:
            raise qfile.CorruptQueueFile(problem)
        attrs[key] = value
    return Submission(name, st.st_uid, env.sender, pending, attrs,
                      env.content_offset, env.content_length)


def read_content(fd: int, sub: Submission, chunk_size: int = 65536, limit: int = 0) -> Iterator[bytes]:
    """The submission's content in chunks, through the descriptor.

    With ``limit``, at most ``limit + 1`` bytes: enough for cleanup to see
    that the message is too big, without streaming a huge (or sparse) file.
    """
    offset, remaining = sub.content_offset, sub.content_length
    if limit:
        remaining = min(remaining, limit + 1)
    while remaining:
        chunk = os.pread(fd, min(chunk_size, remaining), offset)
        if not chunk:
            raise qfile.CorruptQueueFile("truncated content (file shrank)")
        offset += len(chunk)
        remaining -= len(chunk)
        yield chunk
