"""The queue directory: its subdirectories, their owners and modes.

::

    maildrop/   local submissions (sendmail writes, pickup reads)   1733
    incoming/   new files from cleanup, not yet seen by qmgr        0700
    active/     files qmgr is delivering                            0700
    deferred/   files waiting for a retry (mtime = next attempt)    0700
    hold/       files held by postsuper -h, never scheduled         0700
    corrupt/    files that failed to parse, kept for inspection     0700
    private/    sockets only master and mail_owner may use          0700
    public/     sockets any local user may use (pickup, qmgr flush) 0755
    pid/        master.pid, locked while master runs                0755

Everything is owned by ``mail_owner``, except ``pid/`` (root when master
runs as root).  ``maildrop/`` is world-writable and sticky but not
readable: anyone may create a file, nobody may list it, only the owner may
remove theirs (see :mod:`postpy.pickup.service` for the threat model).

A message moves between queues by ``rename`` within this one file system,
so it is always in exactly one of them.  :func:`quarantine` moves a file
that cannot be parsed to ``corrupt/`` and logs the reason.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from postpy.util import maillog

MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT = (
    "maildrop", "incoming", "active", "deferred", "hold", "corrupt")
MESSAGE_QUEUES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD)


@dataclass(frozen=True)
class QueueDir:
    name: str
    mode: int
    owner_is_mail_owner: bool = True


LAYOUT: tuple[QueueDir, ...] = (
    QueueDir(MAILDROP, 0o1733),
    QueueDir(INCOMING, 0o700),
    QueueDir(ACTIVE, 0o700),
    QueueDir(DEFERRED, 0o700),
    QueueDir(HOLD, 0o700),
    QueueDir(CORRUPT, 0o700),
    QueueDir("private", 0o700),
    QueueDir("public", 0o755),
    QueueDir("pid", 0o755, owner_is_mail_owner=False),
)


def queue_path(queue_directory: str, queue: str, queue_id: str = "") -> str:
    return os.path.join(queue_directory, queue, queue_id) if queue_id else os.path.join(queue_directory, queue)


def check_layout(queue_directory: str, uid: int, gid: int, *, repair: bool) -> list[str]:
    """Compare the queue tree with LAYOUT; fix it when ``repair``.

    Returns one line per problem found (and, when repairing, fixed).
    ``uid``/``gid`` are mail_owner's; when not root they are our own.
    """
    problems: list[str] = []
    root_uid = os.getuid()
    if not os.path.isdir(queue_directory):
        problems.append(f"queue directory {queue_directory} is missing")
        if not repair:
            return problems
        os.makedirs(queue_directory, 0o755, exist_ok=True)
    for entry in LAYOUT:
        path = os.path.join(queue_directory, entry.name)
        want_uid = uid if entry.owner_is_mail_owner else root_uid
        want_gid = gid if entry.owner_is_mail_owner else os.getgid()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            if repair:
                os.mkdir(path, entry.mode)
                os.chmod(path, entry.mode)
                if root_uid == 0:
                    os.chown(path, want_uid, want_gid)
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"{path}: not a directory")
            continue
        if stat.S_IMODE(st.st_mode) != entry.mode:
            problems.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, expected {entry.mode:04o}")
            if repair:
                os.chmod(path, entry.mode)
        if root_uid == 0 and (st.st_uid, st.st_gid) != (want_uid, want_gid):
            problems.append(f"{path}: owner {st.st_uid}:{st.st_gid}, expected {want_uid}:{want_gid}")
            if repair:
                os.chown(path, want_uid, want_gid)
    if root_uid == 0 and repair:
        for queue in (INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT):
            qdir = os.path.join(queue_directory, queue)
            for name in os.listdir(qdir):
                if _repair_file(os.path.join(qdir, name), uid, gid):
                    problems.append(f"{os.path.join(qdir, name)}: owner/mode fixed")
    return problems


def _repair_file(path: str, uid: int, gid: int) -> bool:
    """Give a queue file to mail_owner, mode 0600; True when it needed it.

    Through a descriptor opened without following links: mail_owner owns
    these directories and could swap a name for a symlink to a file of
    root's between a check by name and a chown by name.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False              # gone, a symlink (ELOOP), or unreadable: leave it
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        if st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o600:
            return False
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o600)
        return True
    finally:
        os.close(fd)


def quarantine(queue_directory: str, queue: str, queue_id: str, reason: str) -> None:
    """Move a bad file to corrupt/ and log why.  Never raises for a vanished file."""
    src = queue_path(queue_directory, queue, queue_id)
    dst = queue_path(queue_directory, CORRUPT, queue_id)
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return
    except OSError as exc:
        maillog.warning(f"{queue_id}: cannot move corrupt file {src} to {dst}: {exc.strerror}")
        return
    maillog.warning(f"{queue_id}: corrupt queue file moved to {CORRUPT}/: {reason}")


def list_queue(queue_directory: str, queue: str) -> list[str]:
    """Queue IDs in one queue, oldest first (IDs sort by arrival)."""
    try:
        names = os.listdir(queue_path(queue_directory, queue))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith("."))
