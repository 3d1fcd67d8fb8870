"""The first thing every daemon does, before it imports its service.

``libexec/<program>`` calls :func:`daemon_start` and only then imports
``postpy.<program>.service``.  It makes sure descriptors 0-2 are open (on
``/dev/null`` when the daemon was started with them closed, so no file the
daemon opens later takes their place) and that an uncaught exception, even
one raised while the service module is imported, reaches the mail log with
its traceback instead of a stderr nobody reads.
"""

from __future__ import annotations

import os
import sys
import traceback  # noqa: F401 - loaded now: a crash after the privilege drop must not need to read it
from types import TracebackType

from postpy.util import maillog
from postpy.util.stdfds import ensure_std_fds


def daemon_start(program: str) -> None:
    """Descriptors 0-2 open; uncaught exceptions logged as ``fatal:``."""
    ensure_std_fds()

    def log_crash(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not maillog.configured():
            _setup_log(program)
        if not maillog.configured():
            sys.__excepthook__(kind, exc, tb)
            return
        maillog.fatal_exception(exc.with_traceback(tb))

    sys.excepthook = log_crash


def _setup_log(program: str) -> None:
    """The daemon died before the skeleton set up logging: do it now."""
    try:
        from postpy.config.maincf import load_config

        maillog.setup_from_config(program, load_config(os.environ.get("POSTPY_CONFIG")))
    except Exception:  # noqa: BLE001 - main.cf itself may be what is broken
        try:
            maillog.setup(program)     # syslog
        except Exception:  # noqa: BLE001
            pass
