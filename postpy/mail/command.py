"""Running a delivery command and judging how it ended.

Shared by local(8) (``|command`` destinations and ``mailbox_command``, see
:mod:`postpy.local.pipe`) and pipe(8) (:mod:`postpy.pipe.service`): the two
delivery agents that hand a message to an external program.

:func:`run` starts ``argv`` in a child process that gives up root for good
before it executes anything (:func:`postpy.util.privs.drop_to` in the
child: groups, gid, uid, then a check that root cannot be regained), in its
own process group, in the working directory it is given (``/`` when that
is not accessible), with exactly the environment it is given.  It refuses
uid 0 when started as root.  The message goes to standard input; standard
output and standard error are collected together (the first
:data:`OUTPUT_LIMIT` bytes; the rest is read and dropped).  After
``time_limit`` seconds the whole process group is killed.

:func:`verdict` turns the way the command ended into ``None`` (delivered)
or a :class:`Failure` with an RFC 3463 status and a text for the log line
and the DSN:

- timed out: ``4.3.0 Command time limit exceeded``;
- killed by a signal: ``4.3.0``;
- a non-zero exit whose output starts with an RFC 3463 status
  (``4.7.1 text`` / ``5.1.1 text``): that status and that text win;
- a sysexits.h code: the status from :data:`SYSEXITS` (``75 EX_TEMPFAIL``
  defers, ``67 EX_NOUSER`` bounces ``5.1.1``, ...), text ``<meaning>.
  Command output: <output>``;
- any other exit status: ``5.3.0 Command died with status N: "COMMAND".
  Command output: ...``.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postpy.util import privs
from postpy.util.privs import Identity

OUTPUT_LIMIT = 4096
TEXT_LIMIT = 256

# exit status -> (status code, meaning)
SYSEXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}

_ENHANCED = re.compile(r"([45])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s+|$)")


@dataclass(frozen=True)
class CommandResult:
    status: int             # exit status, or -signal
    output: bytes           # the first OUTPUT_LIMIT bytes of stdout+stderr
    timed_out: bool = False


@dataclass(frozen=True)
class Failure:
    """A command delivery that did not succeed; ``dsn`` says how badly."""

    dsn: str
    text: str


def _child_setup(who: Identity, cwd: str) -> None:
    """In the child, before exec: become ``who`` for good, change directory."""
    if os.getuid() == 0:
        privs.drop_to(who.uid, who.gid)
    try:
        os.chdir(cwd or "/")
    except OSError:
        os.chdir("/")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(argv: Sequence[str], data: bytes, who: Identity, env: Mapping[str, str],
        time_limit: float, cwd: str = "/") -> CommandResult:
    """Run ``argv`` as ``who`` with ``data`` on stdin; wait at most ``time_limit`` seconds.

    Raises :class:`postpy.util.privs.PrivilegeError` for uid 0 (when root)
    and OSError when the program cannot be started.
    """
    if os.getuid() == 0 and who.uid == 0:
        raise privs.PrivilegeError("refusing to run a command as root")
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=dict(env), close_fds=True, start_new_session=True,
        preexec_fn=lambda: _child_setup(who, cwd))
    assert proc.stdin is not None and proc.stdout is not None
    deadline = time.monotonic() + time_limit
    output = bytearray()
    view = memoryview(data)
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    timed_out = False
    try:
        if not view:
            sel.unregister(proc.stdin)
            proc.stdin.close()
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                if key.fileobj is proc.stdin:
                    try:
                        view = view[os.write(proc.stdin.fileno(), view[:65536]):]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        view = view[:0]        # the command stopped reading: fine
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        sel.unregister(proc.stdout)
                    elif len(output) < OUTPUT_LIMIT:
                        output += chunk[:OUTPUT_LIMIT - len(output)]
        if not timed_out:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(proc)
    finally:
        sel.close()
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.stdout.close()
        if proc.returncode is None:         # an exception above: never leave it running
            _kill_group(proc)
    return CommandResult(proc.returncode, bytes(output), timed_out)


def printable(output: bytes, limit: int = TEXT_LIMIT) -> str:
    """Command output fit for a log line and a DSN: one line, printable ASCII."""
    text = output.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() and ch.isascii() else " " for ch in text)
    text = " ".join(text.split())
    return text[:limit]


def verdict(command: str, result: CommandResult) -> Failure | None:
    """None for success, else how it failed (see the module docstring).
    ``command`` is how the command is named in the text."""
    if result.timed_out:
        return Failure("4.3.0", f'Command time limit exceeded: "{command}"')
    if result.status == 0:
        return None
    output = printable(result.output, OUTPUT_LIMIT)
    if result.status < 0:
        return Failure("4.3.0", f'Command died with signal {-result.status}: "{command}"'
                                + (f". Command output: {output[:TEXT_LIMIT]}" if output else ""))
    m = _ENHANCED.match(output)
    if m:
        dsn = ".".join(m.group(1, 2, 3))
        return Failure(dsn, output[m.end():][:TEXT_LIMIT] or f'Command failed: "{command}"')
    tail = f". Command output: {output[:TEXT_LIMIT]}" if output else ""
    if result.status in SYSEXITS:
        dsn, meaning = SYSEXITS[result.status]
        return Failure(dsn, f"{meaning}{tail}")
    return Failure("5.3.0", f'Command died with status {result.status}: "{command}"{tail}')
