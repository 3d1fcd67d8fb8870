"""One-byte wake-ups ("new mail in incoming", "flush now", "scan maildrop").

A trigger is a connection to a service's unix socket that writes one byte
and closes.  The byte says what to do; the receiving service (a trigger
server, see :mod:`postpy.server.skeleton`) reads it and acts.  Sending never
blocks long and never fails loudly: a service that is down will scan its
queue when it starts, so a lost trigger only delays mail.
"""

from __future__ import annotations

import socket

WAKEUP = b"W"        # periodic wake-up from master / new work
FLUSH = b"F"         # qmgr: retry deferred mail now
SCAN = b"A"          # qmgr: scan incoming now (sent by cleanup)


def send_trigger(path: str, what: bytes = WAKEUP, timeout: float = 2.0) -> bool:
    """Write ``what`` to the socket at ``path``; True when it was delivered."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(what)
        return True
    except OSError:
        return False
    finally:
        sock.close()
