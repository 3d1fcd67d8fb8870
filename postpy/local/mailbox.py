"""local: append one message to an mbox file, locked, all or nothing.

Used for the user's mailbox (``$mail_spool_directory/USER``, or
``$home/$home_mailbox`` when that does not end in ``/``) and for ``/file``
destinations (:mod:`postpy.local.file`).  The bytes come from
:func:`postpy.local.message.mbox_form`.

Steps, each with the privileges noted ("the user" is root for root's own
mailbox, which is written as root, as Postfix does; see
:mod:`postpy.local.privileges`):

1. **Create** the file if missing, mode 0600, as the user.  In the spool
   directory, which users usually cannot write (Debian: ``2775
   root:mail``), it is created by root with ``O_EXCL|O_NOFOLLOW`` and handed
   to the user with ``fchown`` before anything is written to it.
2. **Dotlock** ``FILE.lock`` (``O_CREAT|O_EXCL``): as the user, or as root
   where the user cannot create files (the spool), Postfix style.  A lock
   older than ``stale_lock_time`` is removed.  For ``/file`` destinations
   the dotlock is best effort (a directory we may not write is no reason
   to refuse).
3. **Open** as the user with ``O_APPEND|O_NOFOLLOW`` (a symlink is
   refused), check that it is a regular file with one link and, for the
   user's own mailbox, that it belongs to the user (in a spool others can
   write -- 1777, or 2775 for group ``mail`` -- anyone could create
   ``SPOOL/victim`` mode 0666 beforehand and read what arrives), take an
   **fcntl** lock.  Steps 2 and 3 are retried ``deliver_lock_attempts``
   times, ``deliver_lock_delay`` apart; then ``4.2.0`` (try later).
4. **Size limit**: old size + message > ``mailbox_size_limit`` ->
   ``5.2.2`` (mailbox full), nothing written.
5. **Write, fsync**, with SIGTERM and friends postponed.  On any error the
   file is truncated back to the size it had under the lock, so a reader
   never sees half a message (a SIGKILL at this moment can still leave one).
6. Unlock, remove the dotlock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

from postpy.local.outcome import DeliveryError, os_error_dsn, os_error_text
from postpy.local.privileges import Identity, acting_as, as_root, root_mode

_POSTPONED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@dataclass(frozen=True)
class MboxPolicy:
    attempts: int = 20
    delay: float = 1.0
    stale_after: float = 500.0
    size_limit: int = 0             # 0: none
    fail_dsn: str = "4.2.0"         # for errors without a more specific status
    root_fallback: bool = False     # spool directory: create and dotlock as root if needed
    dotlock_required: bool = True
    own_mailbox: bool = False       # the user's mailbox: must be theirs; root's written as root


def _privileged(who: Identity, as_user: bool, policy: MboxPolicy) -> AbstractContextManager[None]:
    return acting_as(who, allow_root=policy.own_mailbox) if as_user else as_root()


def _create(path: str, who: Identity, policy: MboxPolicy) -> None:
    """Step 1: make sure the file exists (never replacing anything)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with acting_as(who, allow_root=policy.own_mailbox):
            os.close(os.open(path, flags, 0o600))
        return
    except FileExistsError:
        return
    except PermissionError:
        if not (policy.root_fallback and root_mode()):
            raise
    with as_root():
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return
        try:
            os.fchown(fd, who.uid, who.gid)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


class _Dotlock:
    """``FILE.lock``, created as the user or (spool only) as root."""

    def __init__(self, path: str, who: Identity, policy: MboxPolicy) -> None:
        self.path = path + ".lock"
        self.who = who
        self.policy = policy
        self.held_as_user: bool | None = None     # None: not held
        self.skipped = False                      # optional lock we may not create

    def _ways(self) -> list[bool]:
        """As the user first; then as root where the policy allows it."""
        return [True, False] if self.policy.root_fallback and root_mode() else [True]

    def try_acquire(self) -> bool:
        """One attempt; False when another process holds the lock.  Raises
        OSError for other errors."""
        ways = self._ways()
        for as_user in ways:
            try:
                with _privileged(self.who, as_user, self.policy):
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    try:
                        os.write(fd, f"{os.getpid()}\n".encode())
                    finally:
                        os.close(fd)
            except FileExistsError:
                self._remove_if_stale()
                return False
            except PermissionError:
                if as_user and len(ways) > 1:
                    continue
                raise
            self.held_as_user = as_user
            return True
        return False

    def _remove_if_stale(self) -> None:
        for as_user in self._ways():
            try:
                with _privileged(self.who, as_user, self.policy):
                    if time.time() - os.lstat(self.path).st_mtime > self.policy.stale_after:
                        os.unlink(self.path)
                return
            except OSError:
                continue

    def release(self) -> None:
        if self.held_as_user is None:
            return
        try:
            with _privileged(self.who, self.held_as_user, self.policy):
                os.unlink(self.path)
        except OSError:
            pass
        self.held_as_user = None


def _open_locked(path: str, owner: Identity | None) -> int | None:
    """Step 3 (acting as the user): the open, checked, fcntl-locked fd; None if busy.
    ``owner``: who the file must belong to (None: anyone)."""
    st = os.lstat(path)             # clearer errors than ELOOP/ENXIO; fstat below decides
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.EPERM, "is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EPERM, "not a regular file")
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EPERM, "not a regular file")
        if st.st_nlink != 1:
            raise OSError(errno.EPERM, f"file has {st.st_nlink} hard links")
        if owner is not None and st.st_uid != owner.uid:
            raise OSError(errno.EPERM, f"file is owned by uid {st.st_uid}, not by {owner.name}")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append(fd: int, data: bytes, policy: MboxPolicy) -> None:
    """Steps 4 and 5 on the locked fd."""
    size = os.fstat(fd).st_size
    if policy.size_limit and size + len(data) > policy.size_limit:
        raise DeliveryError("5.2.2", f"mailbox size limit exceeded ({policy.size_limit} bytes)")
    # master's stop (SIGTERM) waits until the message is whole or gone again.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _POSTPONED)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise DeliveryError(os_error_dsn(exc, policy.fail_dsn),
                            f"error writing message: {os_error_text(exc)}") from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def append(path: str, data: bytes, who: Identity, policy: MboxPolicy) -> None:
    """Append ``data`` to the mbox ``path`` as ``who`` (raises DeliveryError)."""
    try:
        _create(path, who, policy)
    except OSError as exc:
        raise DeliveryError(os_error_dsn(exc, policy.fail_dsn),
                            f"cannot create {path}: {os_error_text(exc)}") from None
    lock = _Dotlock(path, who, policy)
    try:
        for attempt in range(max(1, policy.attempts)):
            if attempt:
                time.sleep(policy.delay)
            if lock.held_as_user is None and not lock.skipped:
                try:
                    if not lock.try_acquire():
                        continue
                except OSError as exc:
                    if policy.dotlock_required:
                        raise DeliveryError(os_error_dsn(exc, "4.2.0"),
                                            f"unable to create lock file {lock.path}: "
                                            f"{os_error_text(exc)}") from None
                    lock.skipped = True
            with acting_as(who, allow_root=policy.own_mailbox):
                try:
                    fd = _open_locked(path, who if policy.own_mailbox else None)
                except OSError as exc:
                    raise DeliveryError(os_error_dsn(exc, policy.fail_dsn),
                                        f"cannot open {path}: {os_error_text(exc)}") from None
                if fd is None:
                    continue
                try:
                    _append(fd, data, policy)
                finally:
                    os.close(fd)
            return
    finally:
        lock.release()
    raise DeliveryError("4.2.0", f"unable to lock {path} for exclusive access: "
                                 "Resource temporarily unavailable")
