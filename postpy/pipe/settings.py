"""pipe: the service's command attributes from master.cf.

A pipe(8) service names its command in master.cf, after the program::

    spamfilter unix - n n - - pipe flags=Rq user=spamd
        argv=/usr/bin/spamc -e /usr/sbin/sendmail -oi -f ${sender} ${recipient}

The words after ``pipe`` reach the daemon as its arguments (``ctx.args``,
see :mod:`postpy.server.skeleton`); :func:`parse` reads them:

``flags=``        letters from :data:`FLAGS` (see :mod:`postpy.pipe.content`
                  and :mod:`postpy.pipe.expand` for what each does; ``X``:
                  the command delivers for good, so a success notice says
                  "delivered", not "relayed")
``user=name[:group]``   who runs the command (required; never root, never
                  mail_owner)
``argv=command ...``    the command and its arguments (required, last:
                  every word after it belongs to the command; no shell)
``size=N``        messages larger than N bytes are returned to the sender
``eol=text``      line end written to the command (``\\n`` default;
                  ``\\r\\n`` for CRLF; escapes ``\\r \\n \\t \\\\``)
``null_sender=text``  what the null sender becomes in ``${sender}``, the
                  ``From `` line and ``Return-Path:`` (``MAILER-DAEMON``)
``directory=path``    working directory of the command (default ``/``)

Anything else, an unknown flag, a malformed or unknown ``${macro}`` in
``argv=``, or a root ``user=`` raises :class:`ConfigError` with a text
that names the problem; the service then defers every request with that
text (nothing is run, nothing is lost) until master.cf is fixed.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from postpy.config.maincf import ConfigError
from postpy.pipe.expand import check_macros
from postpy.util.privs import Identity

FLAGS = frozenset("BDFORXhqu.>")
NULL_SENDER = "MAILER-DAEMON"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


@dataclass(frozen=True)
class PipeSettings:
    argv: tuple[str, ...]
    user: Identity
    flags: frozenset[str] = frozenset()
    size_limit: int = 0             # 0: no limit
    eol: bytes = b"\n"
    null_sender: str = NULL_SENDER
    directory: str = "/"


def _eol(text: str) -> bytes:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1:i + 2]
            if nxt not in _ESCAPES:
                raise ConfigError(f"eol={text}: unknown escape \\{nxt}")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    if not out:
        raise ConfigError("eol= must not be empty")
    return "".join(out).encode()


def _user(value: str, mail_owner: str) -> Identity:
    name, _, group = value.partition(":")
    if not name:
        raise ConfigError(f"user={value}: no user name")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise ConfigError(f"user={value}: unknown user {name}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise ConfigError(f"user={value}: unknown group {group}") from None
    if entry.pw_uid == 0:
        raise ConfigError(f"user={value}: refusing to run commands with root privileges")
    if gid == 0:
        raise ConfigError(f"user={value}: refusing to run commands with the root group")
    try:
        owner = pwd.getpwnam(mail_owner).pw_uid
    except KeyError:
        owner = -1
    if entry.pw_uid == owner and os.getuid() == 0:
        raise ConfigError(f"user={value}: refusing to run commands as the mail system owner")
    return Identity(entry.pw_name, entry.pw_uid, gid, entry.pw_dir, entry.pw_shell)


def parse(args: list[str], mail_owner: str) -> PipeSettings:
    """The service's attributes; raises :class:`ConfigError`."""
    flags: frozenset[str] = frozenset()
    user: Identity | None = None
    argv: tuple[str, ...] = ()
    size_limit = 0
    eol = b"\n"
    null_sender = NULL_SENDER
    directory = "/"
    for pos, word in enumerate(args):
        name, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(f"bad attribute \"{word}\" (expected name=value before argv=)")
        if name == "argv":
            argv = (value, *args[pos + 1:]) if value else tuple(args[pos + 1:])
            break
        if name == "flags":
            unknown = sorted(set(value) - FLAGS)
            if unknown:
                raise ConfigError(f"flags={value}: unknown flag \"{unknown[0]}\" (valid: {''.join(sorted(FLAGS))})")
            flags = frozenset(value)
        elif name == "user":
            user = _user(value, mail_owner)
        elif name == "size":
            if not (value.isascii() and value.isdigit()):
                raise ConfigError(f"size={value}: expected a number of bytes")
            size_limit = int(value)
        elif name == "eol":
            eol = _eol(value)
        elif name == "null_sender":
            null_sender = value
        elif name == "directory":
            if not value.startswith("/"):
                raise ConfigError(f"directory={value}: expected an absolute path")
            directory = value
        else:
            raise ConfigError(f"unknown attribute \"{name}=\"")
    if not argv or not argv[0]:
        raise ConfigError("missing argv= command attribute")
    if not argv[0].startswith("/"):
        raise ConfigError(f"argv={argv[0]}: the command must be an absolute path")
    if user is None:
        raise ConfigError("missing user= command attribute")
    for word in argv:
        check_macros(word)
    return PipeSettings(argv, user, flags, size_limit, eol, null_sender, directory)
