"""Diagnostics of the mail commands (sendmail, mailq, postqueue).

One line on stderr per problem, ``program: fatal: text`` or ``program:
warning: text``, also logged (Postfix's commands log their fatal errors
too).  Logging is set up only when there is something to say, so a
successful ``sendmail`` opens no log at all; when ``maillog_file`` is not
writable by the user running the command (an ordinary user and a root-owned
log), the line goes to syslog instead of complaining about the file
(:func:`postpy.util.maillog.setup`, the same rule for every command).

Imported by ``sendmail``: keep it cheap.
"""

from __future__ import annotations

from postpy.util import maillog

_state: dict[str, object] = {"program": "postpy", "cfg": None, "ready": False}


def init(program: str, cfg: object | None = None) -> None:
    """Name the program (and, once loaded, its configuration)."""
    _state["program"] = program
    _state["cfg"] = cfg
    _state["ready"] = False


def _setup() -> None:
    if _state["ready"]:
        return
    _state["ready"] = True
    program = str(_state["program"])
    cfg = _state["cfg"]
    if cfg is None:
        maillog.setup(program, stderr=True)
        return
    try:
        maillog.setup_from_config(program, cfg, stderr=True)
    except Exception:           # a broken main.cf must not hide the real error
        maillog.setup(program, stderr=True)


def fatal(text: str, status: int) -> int:
    """Report ``fatal: text``; return ``status`` for the caller to exit with."""
    _setup()
    try:
        maillog.fatal(text, status)
    except SystemExit:
        pass
    return status


def warning(text: str) -> None:
    _setup()
    maillog.warning(text)


def info(text: str) -> None:
    """Log only (no stderr echo)."""
    _setup()
    maillog.info(text)
