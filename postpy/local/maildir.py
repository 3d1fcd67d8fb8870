"""local: deliver one message into a Maildir, acting as its owner.

Used for ``home_mailbox`` (and ``mail_spool_directory``) values that end
in ``/`` (``Maildir/``) and for ``/dir/`` destinations in aliases and
``.forward``.  The bytes come from
:func:`postpy.local.message.plain_form` (trace headers, no ``From `` line,
no quoting).

Following the Maildir convention (cr.yp.to/proto/maildir.html):

1. create ``DIR``, ``DIR/tmp``, ``DIR/new`` and ``DIR/cur`` when missing,
   mode 0700, as the user (so they belong to the user);
2. write ``tmp/NAME`` (``O_EXCL|O_NOFOLLOW``, mode 0600) and fsync it, with
   ``NAME = <seconds>.M<microseconds>P<pid>Q<n>.<host>`` -- unique within
   this host because a pid delivers one message at a time and ``n`` counts
   this process's deliveries; ``/`` and ``:`` in the host name are written
   ``\\057`` and ``\\072``;
3. rename it to ``new/NAME`` and fsync ``new/``, so the message is on disk
   before local reports it delivered.

A message larger than ``mailbox_size_limit`` is refused with ``5.2.2``;
any error removes the file from ``tmp/`` again.  A user's own Maildir that
already exists must belong to the user (a Maildir spool others can write
could otherwise hold one prepared by someone else), like an mbox.
"""

from __future__ import annotations

import errno
import itertools
import os
import time

from postpy.local.outcome import DeliveryError, os_error_dsn, os_error_text
from postpy.local.privileges import Identity, acting_as

_counter = itertools.count(1)


def unique_name(hostname: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    seconds = int(now)
    micro = int((now - seconds) * 1_000_000)
    host = hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{seconds}.M{micro}P{os.getpid()}Q{next(_counter)}.{host}"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(maildir: str) -> None:
    for sub in ("", "tmp", "new", "cur"):
        path = os.path.join(maildir, sub) if sub else maildir
        try:
            os.makedirs(path, 0o700)
        except FileExistsError:
            pass


def _write_new(maildir: str, data: bytes, hostname: str) -> str:
    name = unique_name(hostname)
    tmp = os.path.join(maildir, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        final = os.path.join(maildir, "new", name)
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.join(maildir, "new"))
    return final


def _check_owner(maildir: str, who: Identity) -> None:
    """An existing Maildir must be ``who``'s (raises OSError)."""
    try:
        st = os.stat(maildir)
    except FileNotFoundError:
        return                      # created by who below
    if st.st_uid != who.uid:
        raise OSError(errno.EPERM, f"owned by uid {st.st_uid}, not by {who.name}", maildir)


def deliver(maildir: str, data: bytes, who: Identity, *, hostname: str, size_limit: int = 0,
            fail_dsn: str = "4.2.0", own_mailbox: bool = False) -> str:
    """Store ``data`` in ``maildir`` as ``who``; the final path (raises DeliveryError).

    ``own_mailbox``: this is ``who``'s own mailbox, so root's is written as
    root (never a ``/dir/`` destination)."""
    if size_limit and len(data) > size_limit:
        raise DeliveryError("5.2.2", f"maildir delivery failed: message is larger than "
                                     f"mailbox_size_limit ({size_limit} bytes)")
    try:
        with acting_as(who, allow_root=own_mailbox):
            if own_mailbox:
                _check_owner(maildir, who)
            try:
                return _write_new(maildir, data, hostname)
            except FileNotFoundError:      # first delivery: create the Maildir, then again
                _make_dirs(maildir)
                return _write_new(maildir, data, hostname)
    except OSError as exc:
        raise DeliveryError(os_error_dsn(exc, fail_dsn),
                            f"maildir delivery failed: {exc.filename or maildir}: "
                            f"{os_error_text(exc)}") from None
