"""Logging in Postfix's line shape.

Every program logs through this module, one line per event::

    Nov 28 19:20:01 host postpy/smtpd[1234]: 4Xk2...: client=localhost[127.0.0.1]

The tag is ``$syslog_name/<program>``.  Lines go to syslog (facility from
``syslog_facility``) or, when ``maillog_file`` is set, are appended to that
file with O_APPEND (one write per line, so lines from many processes never
interleave).  Commands also echo warnings and errors to stderr as
``program: warning: text``, as Postfix's commands do.

Call :func:`setup` once at start; then :func:`info`, :func:`warning`,
:func:`error`, :func:`fatal` (logs and exits 1: for broken invariants, so
master restarts the daemon) and :func:`panic`.  A daemon that dies of an
uncaught exception logs it with :func:`fatal_exception`: one
``traceback:`` line per line of the traceback, then ``fatal: program:
Type: text``.
"""

from __future__ import annotations

import errno
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~2 ms to import; commands run from cron pay it every time
    from typing import NoReturn

_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_state: dict[str, object] = {
    "tag": "postpy", "fd": None, "syslog": False, "stderr": False, "host": "localhost",
}


def setup(program: str, *, syslog_name: str = "postpy", maillog_file: str = "",
          facility: str = "mail", hostname: str = "", stderr: bool = False) -> None:
    """Choose where lines go.  ``stderr`` echoes warnings and worse (commands);
    a command whose user may not write ``maillog_file`` logs to syslog instead,
    without a word, as Postfix's commands do."""
    _state["tag"] = f"{syslog_name}/{program}" if "/" not in program else program
    _state["stderr"] = stderr
    _state["host"] = (hostname or os.uname().nodename).split(".")[0]
    old = _state["fd"]
    if isinstance(old, int):
        try:
            os.close(old)
        except OSError:   # already closed (e.g. by daemonizing)
            pass
    _state["fd"] = None
    _state["syslog"] = False
    if maillog_file:
        if maillog_file == "/dev/stdout":
            _state["fd"] = os.dup(1)
        elif maillog_file == "/dev/stderr":
            _state["fd"] = os.dup(2)
        else:
            try:
                _state["fd"] = os.open(maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if stderr and exc.errno in _DENIED:
                    _open_syslog(facility)   # a command run by a user who may not write the log
                else:
                    sys.stderr.write(f"{_state['tag']}: warning: open {maillog_file}: {exc.strerror}\n")
    else:
        _open_syslog(facility)


def _open_syslog(facility: str) -> None:
    import syslog

    fac = getattr(syslog, f"LOG_{facility.upper()}", syslog.LOG_MAIL)
    syslog.openlog(str(_state["tag"]), syslog.LOG_PID | syslog.LOG_NDELAY, fac)
    _state["syslog"] = True


def configured() -> bool:
    """Whether :func:`setup` chose a destination (a file or syslog)."""
    return isinstance(_state["fd"], int) or bool(_state["syslog"])


def forget() -> None:
    """Drop the log descriptor without closing it (daemonizing closed it already,
    and its number may since belong to another file)."""
    _state["fd"] = None


def setup_from_config(program: str, cfg: object, *, stderr: bool = False) -> None:
    """:func:`setup` with values from a :class:`postpy.config.maincf.Config`."""
    get = cfg.get  # type: ignore[attr-defined]
    setup(program, syslog_name=get("syslog_name"), maillog_file=get("maillog_file"),
          facility=get("syslog_facility"), hostname=get("myhostname"), stderr=stderr)


def _emit(priority: int, text: str, echo: bool) -> None:
    # Client-supplied text must not reach a terminal as control sequences:
    # every control character becomes "?" (line breaks a space), as Postfix does;
    # so does each byte that was not UTF-8 (kept as a surrogate escape by the
    # readers of client text), instead of a "\udcf7" escape.
    text = text.replace("\n", " ").replace("\r", " ").translate(_CONTROLS)
    fd = _state["fd"]
    if isinstance(fd, int):
        stamp = time.strftime("%b %e %H:%M:%S")
        line = f"{stamp} {_state['host']} {_state['tag']}[{os.getpid()}]: {text}\n"
        try:
            os.write(fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    elif _state["syslog"]:
        import syslog

        syslog.syslog(priority, text)
    if echo and _state["stderr"]:
        prog = str(_state["tag"]).rsplit("/", 1)[-1]
        try:
            sys.stderr.write(f"{prog}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


_CONTROLS = {c: "?" for c in (*range(0x20), 0x7F, *range(0xD800, 0xE000))}


def info(text: str) -> None:
    _emit(6, text, False)


def warning(text: str) -> None:
    _emit(4, f"warning: {text}", True)


def error(text: str) -> None:
    _emit(3, f"error: {text}", True)


def fatal(text: str, status: int = 1) -> NoReturn:
    _emit(2, f"fatal: {text}", True)
    sys.exit(status)


def fatal_exception(exc: BaseException) -> None:
    """Log an uncaught exception with its traceback (a daemon's last words);
    the caller exits."""
    import traceback

    prog = str(_state["tag"]).rsplit("/", 1)[-1]
    for chunk in traceback.format_exception(exc):
        for line in chunk.rstrip("\n").split("\n"):
            _emit(2, f"traceback: {line}", False)
    _emit(2, f"fatal: {prog}: {type(exc).__name__}: {exc}", True)


def panic(text: str) -> NoReturn:
    _emit(0, f"panic: {text}", True)
    os._exit(2)
