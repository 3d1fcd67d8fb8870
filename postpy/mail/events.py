"""Log lines for mail events, in the exact shape Postfix's log readers parse.

One function per event; the queue ID always comes first.  See COMPAT.md's
log section for the reference lines.  Delivery agents call
:func:`log_delivery` once per recipient outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from postpy.util import maillog


def format_delay(seconds: float) -> str:
    """Postfix style (delay_logging_resolution_limit = 2): two significant
    digits, at most two decimals, trailing zeros dropped; under 0.01 is 0."""
    if seconds < 0.005:
        return "0"
    if seconds >= 10:
        return str(int(round(seconds)))
    decimals = 1 if seconds >= 1 else 2
    return f"{seconds:.{decimals}f}".rstrip("0").rstrip(".")


@dataclass
class Timing:
    """The four parts of ``delays=a/b/c/d``: before qmgr, in qmgr,
    connection setup, transmission."""

    arrival: float
    active: float
    dispatch: float
    connected: float = 0.0
    done: float = 0.0

    def delays(self) -> str:
        done = self.done or time.time()
        connected = self.connected or self.dispatch
        parts = (self.active - self.arrival, self.dispatch - self.active,
                 connected - self.dispatch, done - connected)
        return "/".join(format_delay(max(0.0, p)) for p in parts)

    def total(self) -> str:
        return format_delay((self.done or time.time()) - self.arrival)


def log_delivery(queue_id: str, recipient: str, *, orig: str = "", relay: str, timing: Timing,
                 dsn: str, status: str, text: str, conn_use: int = 0, tls: str = "") -> None:
    """``ID: to=<r>, orig_to=<o>, relay=x, delay=t, delays=a/b/c/d, dsn=X.Y.Z, status=S (text)``"""
    parts = [f"{queue_id}: to=<{recipient}>"]
    if orig and orig != recipient:
        parts.append(f"orig_to=<{orig}>")
    parts.append(f"relay={relay}")
    if conn_use > 1:
        parts.append(f"conn_use={conn_use}")
    parts.append(f"delay={timing.total()}")
    parts.append(f"delays={timing.delays()}")
    if tls:
        parts.append(f"tls={tls}")
    parts.append(f"dsn={dsn}")
    parts.append(f"status={status} ({text})")
    maillog.info(", ".join(parts))
