"""local: read ``~/.forward`` and ``:include:`` files, safely.

Both are read with the privileges of whoever the expansion acts for (the
recipient for ``.forward``; the including context for ``:include:``), so a
user cannot make local read a file they could not read themselves.  The
exception is root's own ``.forward``, read as root (deliveries for root act
as ``default_privs``, who could not read it).

``.forward`` (:func:`read_forward`): the ``forward_path`` elements are
expanded per recipient (``$home``, ``$user``, ``$extension``, ...; an
element that needs an undefined name, such as ``$extension`` for a
recipient without one, is skipped) and tried in order; the first file that
exists is used.  It is honoured only when it is a regular file owned by the
user or by root and not writable by group or others; otherwise a warning is
logged and the file is ignored, as if it did not exist (the next element is
tried).  An empty ``.forward`` (no destinations) means "no forwarding":
mail goes to the mailbox.  Its syntax is the right-hand side of an alias,
one or more destinations per line, ``#`` comment lines.

``:include:`` (:func:`read_text`, then :func:`unsafe`): a regular file,
read whole (at most :data:`MAX_FILE_SIZE` bytes), under the same rule as
``.forward`` for writability: one that group or others may write is
refused (anyone who could write it could add themselves to the list, or
commands that run with its owner's rights).  Its owner may be anyone: the
caller takes the owner from the returned ``stat`` result to decide who
runs its commands.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from postpy.local.privileges import Identity, acting_as, as_root, root_mode
from postpy.local.settings import LocalSettings
from postpy.tables.aliases_parser import Target, parse_include

MAX_FILE_SIZE = 4 * 1024 * 1024


def read_text(path: str) -> tuple[str, os.stat_result]:
    """A regular file's text and stat (raises OSError; a FIFO never blocks)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_SIZE:
                raise OSError(0, f"file is larger than {MAX_FILE_SIZE} bytes", path)
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "surrogateescape"), st


def forward_paths(settings: LocalSettings, user: Identity, recipient: str, local: str,
                  extension: str, domain: str) -> list[str]:
    """The ``forward_path`` elements for this recipient, expanded, in order.

    An extension that could leave the directory (``/``, a leading ``.``) is
    treated as undefined, so ``.forward+$extension`` is simply not tried.
    """
    if "/" in extension or extension.startswith("."):
        extension = ""
    names = {"home": user.home, "user": user.name, "shell": user.shell, "recipient": recipient,
             "local": local, "extension": extension, "domain": domain}
    paths = []
    for element in settings.forward_path:
        path = settings.expand_local(element, names)
        if path:
            paths.append(path)
    return paths


def unsafe(st: os.stat_result, user: Identity | None = None) -> str | None:
    """Why a ``.forward`` (``user``'s) or ``:include:`` file (``user`` None)
    must not be used; None when it is fine.  Both must not be writable by
    group or others; a ``.forward`` must belong to its user or to root."""
    if user is not None and st.st_uid not in (user.uid, 0):
        return f"owned by uid {st.st_uid}, not by {user.name} or root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by group or others"
    return None


def read_forward(settings: LocalSettings, user: Identity, acting: Identity, paths: list[str],
                 warn: Callable[[str], None]) -> list[Target] | None:
    """Destinations of the first usable ``.forward`` in ``paths``; None when
    there is none ([] for an empty one)."""
    for path in paths:
        # root's own .forward is read as root (only root can write its home);
        # commands in it still run as default_privs.
        reader = as_root() if user.uid == 0 and root_mode() else acting_as(acting)
        try:
            with reader:
                text, st = read_text(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:      # $home is not a directory: no .forward
                continue
            warn(f"cannot read {path}: {exc.strerror or exc}: ignored")
            continue
        problem = unsafe(st, user)
        if problem:
            warn(f"{path}: {problem}: ignored")
            continue
        return parse_include(text)
    return None
