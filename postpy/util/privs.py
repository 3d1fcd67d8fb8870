"""The one audited place where a process changes its privileges.

``drop_to(uid, gid)`` is permanent (setgroups, setresgid, setresuid, then a
check that root cannot be regained).  ``become(uid, gid)`` and
``restore()`` switch only the effective ids, for the local delivery agent,
which must act as each recipient in turn and come back; it is the only
caller of those two.  ``enter_chroot`` confines a daemon to the queue
directory before it drops privileges.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


class PrivilegeError(Exception):
    """A privilege change failed or did not take effect."""


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    home: str = "/"
    shell: str = "/bin/sh"


def lookup_user(name: str) -> Identity:
    """The passwd entry of a user name (or numeric uid)."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isascii() and name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"unknown user: {name}") from None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def current_identity() -> Identity:
    uid = os.getuid()
    try:
        return lookup_user(str(uid))
    except PrivilegeError:
        return Identity(str(uid), uid, os.getgid())


def mail_owner_identity(mail_owner: str) -> Identity:
    """mail_owner when running as root; otherwise whoever we are (embedded mode)."""
    if os.getuid() != 0:
        return current_identity()
    return lookup_user(mail_owner)


def enter_chroot(directory: str) -> None:
    os.chroot(directory)
    os.chdir("/")


def drop_to(uid: int, gid: int) -> None:
    """Permanently become uid/gid; verify that it stuck."""
    if os.getuid() != 0:
        if os.getuid() != uid:
            raise PrivilegeError(f"cannot change to uid {uid} without root")
        return
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError("privileges could be regained after drop")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(f"privilege drop to {uid}:{gid} did not take effect")


def become(uid: int, gid: int, groups: list[int] | None = None) -> None:
    """Switch effective ids (saved uid stays root so restore() can return)."""
    if os.geteuid() != 0:
        raise PrivilegeError("become() needs effective root")
    os.setgroups(groups if groups is not None else [gid])
    os.setresgid(-1, gid, -1)
    os.setresuid(-1, uid, -1)
    if os.geteuid() != uid or os.getegid() != gid:
        raise PrivilegeError(f"switch to {uid}:{gid} did not take effect")


def restore() -> None:
    """Back to effective root after become()."""
    os.setresuid(-1, 0, -1)
    os.setresgid(-1, 0, -1)
    os.setgroups([0])
