"""Who may use the local mail commands: the ``authorized_*_users`` lists.

Readers: ``sendmail`` (``authorized_submit_users``, checked for its own
real uid), ``postqueue -f/-i/-s`` (``authorized_flush_users``, its own
uid) and the showq daemon (``authorized_mailq_users``, for the uid the
kernel reports for the client socket with SO_PEERCRED).  No I/O besides
the table and passwd lookups; no privileges needed.

A list (Postfix's syntax) holds, in order, any of:

- ``name``: a login name (compared without regard to case);
- ``/file/name``: a file of such elements, separated by white space or
  commas (``#`` starts a comment line);
- ``type:table``: a lookup table; the login name matches when the table
  has it, whatever the value.  ``static:anyone`` therefore matches every
  user, which is the default of all three parameters;
- ``!element``: a match of ``element`` denies.

The first element that matches decides; a user matched by none is denied.
A uid without a passwd entry matches only a table that answers for any
key (``static:``).  root and mail_owner are always allowed to list and
flush the queue (they can read it anyway); for submission, the list is
applied to everyone, as Postfix does.

The fast path (``static:anyone``, the default) imports nothing: commands
run from cron pay for tables only when the administrator configured one.
"""

from __future__ import annotations

import pwd
import socket
import struct

ANYONE = ("static:anyone",)
_MAX_DEPTH = 5


class AccessError(Exception):
    """The list could not be evaluated (unreadable file, broken table)."""


def login_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _file_elements(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError as exc:
        raise AccessError(f"open {path}: {exc.strerror}") from None
    words: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        words.extend(w for w in line.replace(",", " ").split() if w)
    return words


def _table_has(spec: str, key: str) -> bool:
    from postpy.tables.maps import TableError, open_table

    try:
        return open_table(spec).lookup(key) is not None
    except TableError as exc:
        raise AccessError(str(exc)) from None


def _matches(element: str, name: str | None, depth: int) -> bool | None:
    """True (allow), False (deny) or None (no opinion) for one element."""
    negate = element.startswith("!")
    if negate:
        element = element[1:]
    if element.startswith("/"):
        if depth >= _MAX_DEPTH:
            raise AccessError(f"{element}: files nested too deeply")
        found = _match_list(_file_elements(element), name, depth + 1)
        hit = found is True
    elif ":" in element:
        if element.lower() in ANYONE:
            hit = True
        elif element.startswith("static:"):
            hit = True                    # a static table answers for any key
        else:
            hit = name is not None and _table_has(element, name)
    else:
        hit = name is not None and element.lower() == name.lower()
    if not hit:
        return None
    return not negate


def _match_list(elements: list[str], name: str | None, depth: int) -> bool | None:
    for element in elements:
        verdict = _matches(element, name, depth)
        if verdict is not None:
            return verdict
    return None


def user_allowed(elements: list[str], name: str | None) -> bool:
    """Does the list allow this login name (None: the uid has no name)?

    Raises :class:`AccessError` when a file or table in the list fails.
    """
    return _match_list(elements, name, 0) is True


def uid_allowed(elements: list[str], uid: int, *, privileged: tuple[int, ...] = ()) -> bool:
    """Does the list allow this uid?  ``privileged`` uids always may."""
    if uid in privileged:
        return True
    if [e.lower() for e in elements] == list(ANYONE):
        return True
    return user_allowed(elements, login_name(uid))


def privileged_uids(mail_owner: str) -> tuple[int, ...]:
    """root and mail_owner's uid (when that user exists)."""
    try:
        return (0, pwd.getpwnam(mail_owner).pw_uid)
    except KeyError:
        return (0,)


_UCRED = struct.Struct("3i")       # struct ucred: pid, uid, gid


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket, from the kernel."""
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(data)
    return uid
