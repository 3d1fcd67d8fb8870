"""local: whose privileges each step runs with.

local runs with ``unpriv = n``: as root when master runs as root, so that
it can act as each recipient in turn.  :func:`acting_as` switches the
*effective* ids through :func:`postpy.util.privs.become` (the one audited
helper) for the duration of a ``with`` block and switches back afterwards,
and commands drop all privileges for good in the child
(:func:`postpy.util.privs.drop_to`).  Things done as root: reading the
queue file and the alias tables, reading root's own ``.forward``, creating
a missing mailbox in a spool directory the user cannot write (then handed
to the user with fchown) and the mailbox dotlock there (see
:mod:`postpy.local.mailbox`), and **root's own mailbox** (mbox or Maildir),
written as root as Postfix does, so that it belongs to root and stays
private.  That last case is the only one where :func:`acting_as` accepts
uid 0, and only when the caller says so (``allow_root=True``, passed by
mailbox delivery alone); no command, ``/file``, ``/dir/`` or
``:include:`` read ever runs with uid 0.

Who acts for a destination (decided in :mod:`postpy.local.resolve`):
the recipient for its mailbox (root included,
:meth:`postpy.local.settings.LocalSettings.mailbox_owner`) and for
``.forward`` targets; the owner of the alias table for commands and files
from aliases (``default_privs`` when root owns it); the owner of an
``:include:`` file (the including context's identity when root owns it).
For everything but the mailbox a uid 0 identity is replaced with
``default_privs`` (:meth:`postpy.local.settings.LocalSettings.acting`), and
so is root's ``mailbox_command``.

Embedded mode (not started as root): everything runs as the current user,
identities collapse to it, and :func:`acting_as` changes nothing.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterator
from contextlib import contextmanager

from postpy.util import privs
from postpy.util.privs import Identity, PrivilegeError

__all__ = ["Identity", "PrivilegeError", "acting_as", "as_root", "identity_of_uid",
           "lookup_user", "root_mode"]


def root_mode() -> bool:
    """True when local can switch users (its real uid is root)."""
    return os.getuid() == 0


def lookup_user(name: str) -> Identity | None:
    """The passwd entry of a (folded) user name, or None."""
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError):
        return None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def identity_of_uid(uid: int, gid: int = -1) -> Identity:
    """The passwd entry of a uid; a bare uid (and ``gid``) when it has none."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(str(uid), uid, gid if gid >= 0 else uid, "/", "/bin/sh")
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


GROUPS_TTL = 60.0             # seconds a user's group list is remembered
_group_cache: dict[tuple[str, int], tuple[float, list[int]]] = {}


def _groups(who: Identity) -> list[int]:
    """The user's groups; asked of NSS at most once a minute per user (the
    lookup reads /etc/group and friends each time, a large share of a delivery)."""
    key = (who.name, who.gid)
    now = time.monotonic()
    cached = _group_cache.get(key)
    if cached is not None and now - cached[0] < GROUPS_TTL:
        return cached[1]
    try:
        groups = os.getgrouplist(who.name, who.gid)
    except (KeyError, OSError, TypeError):
        groups = [who.gid]
    if len(_group_cache) > 1000:
        _group_cache.clear()
    _group_cache[key] = (now, groups)
    return groups


@contextmanager
def acting_as(who: Identity, *, allow_root: bool = False) -> Iterator[None]:
    """Run the block with ``who``'s effective uid, gid and groups.

    A uid 0 ``who`` is refused unless ``allow_root`` (root's own mailbox):
    then the block keeps root's ids."""
    if os.geteuid() != 0:
        if root_mode():
            raise PrivilegeError("acting_as: already switched (nested use)")
        yield
        return
    if who.uid == 0:
        if not allow_root:
            raise PrivilegeError("refusing to deliver with root privileges")
        yield
        return
    privs.become(who.uid, who.gid, _groups(who))
    try:
        yield
    finally:
        privs.restore()


@contextmanager
def as_root() -> Iterator[None]:
    """Mark a block that deliberately keeps root (a no-op switch, for readers:
    it fails loudly if called while acting as someone else)."""
    if root_mode() and os.geteuid() != 0:
        raise PrivilegeError("as_root: called while acting as another user")
    yield
