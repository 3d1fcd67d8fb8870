"""local: deliver one message to a ``|command`` (and to ``mailbox_command``).

The command runs as ``/bin/sh -c COMMAND`` in a child process that gives up
root for good before it executes anything (:func:`postpy.util.privs.drop_to`
in the child: groups, gid, uid, then a check that root cannot be regained),
in its own process group, with the working directory set to the acting
user's home (``/`` when that is not accessible) and exactly this
environment (local(8)'s list; nothing of local's own environment leaks)::

    HOME USER LOGNAME SHELL      the user the command runs as
    SENDER                       envelope sender ("" for <>)
    RECIPIENT                    the address being delivered to
    LOCAL EXTENSION DOMAIN       its local part (with extension), extension, domain
    ORIGINAL_RECIPIENT           the recipient as qmgr asked for it
    PATH=/usr/bin:/bin

The message arrives on standard input (see
:func:`postpy.local.message.plain_form`: a ``From `` line, ``Return-Path:``,
``Delivered-To:`` when configured).  Standard output and standard error are
collected (the first :data:`OUTPUT_LIMIT` bytes; the rest is read and
dropped) for the delivery status text.

Running the command and judging its exit are shared with pipe(8) in
:mod:`postpy.mail.command`; this module adds local's shell, environment
and working directory.  Verdicts:

- exit 0: delivered;
- after ``command_time_limit`` seconds the process group is killed:
  deferred, ``4.3.0 Command time limit exceeded``;
- killed by a signal: deferred ``4.3.0``;
- a non-zero exit whose output starts with an RFC 3463 status
  (``4.7.1 text`` / ``5.1.1 text``): that status and that text win;
- a sysexits.h code: the status from :data:`SYSEXITS` (``75 EX_TEMPFAIL``
  defers, ``67 EX_NOUSER`` bounces ``5.1.1``, ...), text ``<meaning>.
  Command output: <output>``;
- any other exit status: bounced ``5.3.0``, ``Command died with status N:
  "COMMAND". Command output: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping

from postpy.local.outcome import DeliveryError
from postpy.mail import command as shared
from postpy.mail.command import OUTPUT_LIMIT, SYSEXITS, TEXT_LIMIT, CommandResult, printable
from postpy.util import privs
from postpy.util.privs import Identity

__all__ = ["OUTPUT_LIMIT", "PATH", "SHELL", "SYSEXITS", "TEXT_LIMIT", "CommandResult",
           "environment", "printable", "privs", "run", "verdict"]

SHELL = "/bin/sh"
PATH = "/usr/bin:/bin"


def environment(who: Identity, *, sender: str, recipient: str, local: str, extension: str,
                domain: str, original: str) -> dict[str, str]:
    return {
        "HOME": who.home, "USER": who.name, "LOGNAME": who.name, "SHELL": who.shell or SHELL,
        "SENDER": sender, "RECIPIENT": recipient, "LOCAL": local, "EXTENSION": extension,
        "DOMAIN": domain, "ORIGINAL_RECIPIENT": original, "PATH": PATH,
    }


def run(command: str, data: bytes, who: Identity, env: Mapping[str, str],
        time_limit: float) -> CommandResult:
    """Run ``command`` with ``data`` on stdin; wait at most ``time_limit`` seconds."""
    return shared.run([SHELL, "-c", command], data, who, env, time_limit, cwd=who.home or "/")


def verdict(command: str, result: CommandResult) -> DeliveryError | None:
    """None for success, else the error to report (see the module docstring)."""
    failure = shared.verdict(command, result)
    return None if failure is None else DeliveryError(failure.dsn, failure.text)
