"""anvil's counting: open connections and event rates per client, for smtpd's limits.

One :class:`Entry` per ident (``service:client_addr``).  ``count`` is the
number of connections open now; the rates count events (connections,
messages, recipients, new TLS sessions, AUTH commands) since the entry's
window began.  A window lasts ``anvil_rate_time_unit``: the first event
after it ended starts a new one with every rate at zero, as Postfix's
anvil(8) does (a fixed window per client, not a sliding one).  An entry
with no open connection whose window has ended is forgotten by
:meth:`Table.sweep`, so idle clients cost nothing.

:class:`Table` also keeps the extremes Postfix logs as ``statistics:``
lines (:meth:`Table.statistics`, which resets them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RATES = ("rate", "message", "recipient", "newtls", "auth")
# statistics: line names, Postfix's wording
STAT_NAMES = {"rate": "connection rate", "count": "connection count", "message": "message rate",
              "recipient": "recipient rate", "newtls": "newtls rate", "auth": "auth rate"}


@dataclass
class Entry:
    start: float                # when the current window began (monotonic)
    count: int = 0
    rate: int = 0               # connections in this window
    message: int = 0
    recipient: int = 0
    newtls: int = 0
    auth: int = 0


@dataclass
class Peak:
    value: int = 0
    ident: str = ""
    when: float = 0.0           # wall clock, for the log line


@dataclass
class Table:
    unit: float = 60.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    entries: dict[str, Entry] = field(default_factory=dict)
    peaks: dict[str, Peak] = field(default_factory=dict)
    max_size: Peak = field(default_factory=Peak)

    def _entry(self, ident: str) -> Entry:
        now = self.clock()
        entry = self.entries.get(ident)
        if entry is None:
            entry = self.entries[ident] = Entry(start=now)
            if len(self.entries) > self.max_size.value:
                self.max_size = Peak(len(self.entries), "", self.wall())
        elif now - entry.start >= self.unit:
            entry.start = now
            for name in RATES:
                setattr(entry, name, 0)
        return entry

    def _peak(self, name: str, value: int, ident: str) -> None:
        peak = self.peaks.setdefault(name, Peak())
        if value > peak.value:
            peak.value, peak.ident, peak.when = value, ident, self.wall()

    def connect(self, ident: str) -> Entry:
        entry = self._entry(ident)
        entry.count += 1
        entry.rate += 1
        self._peak("count", entry.count, ident)
        self._peak("rate", entry.rate, ident)
        return entry

    def disconnect(self, ident: str, n: int = 1) -> None:
        entry = self.entries.get(ident)
        if entry is not None:
            entry.count = max(0, entry.count - n)

    def event(self, name: str, ident: str) -> int:
        """Count one ``message``, ``recipient``, ``newtls`` or ``auth``; the rate."""
        entry = self._entry(ident)
        value = getattr(entry, name) + 1
        setattr(entry, name, value)
        self._peak(name, value, ident)
        return int(value)

    def lookup(self, ident: str) -> Entry:
        """The ident's numbers, counting nothing (a fresh window reads zero)."""
        entry = self.entries.get(ident)
        if entry is None:
            return Entry(start=self.clock())
        if self.clock() - entry.start >= self.unit:
            return Entry(start=entry.start, count=entry.count)
        return Entry(**vars(entry))

    def sweep(self) -> int:
        """Forget clients with no connection whose window ended; how many."""
        now = self.clock()
        idle = [ident for ident, e in self.entries.items() if e.count == 0 and now - e.start >= self.unit]
        for ident in idle:
            del self.entries[ident]
        return len(idle)

    def statistics(self) -> list[str]:
        """Postfix's ``statistics:`` lines for the extremes since the last call; resets them."""
        lines = []
        unit = f"/{self.unit:g}s"
        for name in ("rate", "count", "message", "recipient", "newtls", "auth"):
            peak = self.peaks.get(name)
            if peak is None or peak.value == 0:
                continue
            per = "" if name == "count" else unit
            lines.append(f"statistics: max {STAT_NAMES[name]} {peak.value}{per} "
                         f"for ({peak.ident}) at {_stamp(peak.when)}")
        if self.max_size.value:
            lines.append(f"statistics: max cache size {self.max_size.value} at {_stamp(self.max_size.when)}")
        self.peaks.clear()
        self.max_size = Peak()
        return lines


def _stamp(when: float) -> str:
    """``Jan  2 15:04:05``: ctime() less the weekday and year, as Postfix logs it."""
    return time.ctime(when)[4:19]
