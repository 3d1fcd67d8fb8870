"""Descriptors 0, 1 and 2 of every postpy program: never left closed.

A program started with stdin, stdout or stderr closed (by cron, an init
system, a careless parent) would hand those numbers to the next file it
opens, and a stray write to "stdout" would then land in a protocol stream,
a lookup table or the mail log.  :func:`ensure_std_fds` opens ``/dev/null``
on each of them that is closed, as the very first thing a program does
(the daemon launchers in ``libexec/``, master and the commands).
"""

from __future__ import annotations

import os
import sys

_STREAMS = (("stdin", "r"), ("stdout", "w"), ("stderr", "w"))


def ensure_std_fds() -> None:
    """Open /dev/null on any of descriptors 0-2 that is closed.

    The descriptors are inheritable (children of master get them too), and
    ``sys.stdin``/``stdout``/``stderr``, which the interpreter leaves at
    None for a closed descriptor, are made to refer to them.
    """
    while True:
        fd = os.open(os.devnull, os.O_RDWR)
        if fd > 2:
            os.close(fd)
            break
        os.set_inheritable(fd, True)
    for fd, (name, mode) in enumerate(_STREAMS):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8",  # noqa: SIM115
                                    errors="backslashreplace"))
