"""Per-client failure counting for SMTP AUTH: slow down, then cut off.

Against password guessing, smtpd counts failed AUTH attempts per client
address:

- after each failure the ``535`` reply waits ``smtpd_sasl_failure_delay``
  times the number of failures the client has in the window, so guesses
  get slower and slower (1 s, 2 s, 3 s, ... with the default);
- a client with ``smtpd_sasl_failure_limit`` failures inside
  ``smtpd_sasl_failure_window`` is cut off: its AUTH gets
  ``421 4.7.0 ... too many failed authentication attempts`` and the
  connection is closed, on this and any later connection, until its oldest
  failure leaves the window.  0 disables the cut-off.

A success does not clear the count (a valid account must not let a
client keep guessing others).  Temporary backend failures and aborted
exchanges are not counted.

Where the counts live.  smtpd processes come and go (``max_use``,
``max_idle``, several at once under load), so a count kept in one
process's memory would let a guesser start afresh by opening enough
connections.  :class:`DirectoryStore` keeps them in files instead, one per
client address under ``$data_directory/sasl_failures`` (created by smtpd
before it drops privileges, mode 0700, owned by mail_owner): a failure
appends one timestamp line with O_APPEND (atomic between processes), a
check reads the file.  Files of clients whose failures all left the window
are removed when read, and at most once a window a sweep removes files not
touched within it.  Failures are rare, and a client without one costs one
failed ``open``.  :class:`MemoryStore` is the in-process fallback (and the
test double) when the directory cannot be made or written.  Postfix's anvil server
plays this role there.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

SUBDIR = "sasl_failures"


class FailureStore(Protocol):
    def stamps(self, addr: str, since: float) -> list[float]:
        """Failure times of ``addr`` later than ``since``."""

    def add(self, addr: str, when: float, since: float) -> None:
        """Record one failure; may forget those not later than ``since``."""


@dataclass
class MemoryStore:
    table: dict[str, list[float]] = field(default_factory=dict)

    def stamps(self, addr: str, since: float) -> list[float]:
        kept = [t for t in self.table.get(addr, []) if t > since]
        if kept:
            self.table[addr] = kept
        else:
            self.table.pop(addr, None)
        return kept

    def add(self, addr: str, when: float, since: float) -> None:
        self.table[addr] = [*self.stamps(addr, since), when]
        if len(self.table) > 1024:          # bounded by recently failing clients
            for other in list(self.table):
                self.stamps(other, since)


def _file_name(addr: str) -> str:
    """A client address as a file name (IPv4/IPv6 text; anything else is escaped)."""
    name = re.sub(r"[^0-9A-Za-z.:]", lambda m: f"_{ord(m.group(0)):02x}", addr)[:200]
    return name if name and not name.startswith(".") else "_" + name


@dataclass
class DirectoryStore:
    directory: str
    last_sweep: float = 0.0

    def _path(self, addr: str) -> str:
        return os.path.join(self.directory, _file_name(addr))

    def stamps(self, addr: str, since: float) -> list[float]:
        path = self._path(addr)
        try:
            with open(path, "rb") as fh:
                data = fh.read(65536)
        except OSError:
            return []
        kept = []
        for word in data.split():
            try:
                stamp = float(word)
            except ValueError:
                continue
            if stamp > since:
                kept.append(stamp)
        if not kept:
            try:
                os.unlink(path)
            except OSError:
                pass
        return kept

    def add(self, addr: str, when: float, since: float) -> None:
        if when - self.last_sweep > when - since:     # at most once a window
            self.last_sweep = when
            self.sweep(since)
        path = self._path(addr)
        if len(self.stamps(addr, since)) > 64:       # keep the file small: rewrite it
            try:
                os.unlink(path)
            except OSError:
                pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{when!r}\n".encode("ascii"))     # repr: exact round trip
        finally:
            os.close(fd)

    def sweep(self, since: float) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                if os.stat(path).st_mtime <= since:
                    os.unlink(path)
            except OSError:
                pass


def prepare_directory(data_directory: str, uid: int = -1, gid: int = -1) -> str:
    """Create ``$data_directory/sasl_failures`` (mode 0700, owned by uid:gid
    when given); return its path.  Raises OSError when that fails."""
    path = os.path.join(data_directory, SUBDIR)
    os.makedirs(data_directory, mode=0o755, exist_ok=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if uid >= 0 and os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, 0o700)
    return path


@dataclass
class FailureLimiter:
    delay: float = 1.0          # smtpd_sasl_failure_delay
    limit: int = 5              # smtpd_sasl_failure_limit (0: never cut off)
    window: float = 600.0       # smtpd_sasl_failure_window
    max_delay: float = 30.0     # a single reply never waits longer than this
    clock: Callable[[], float] = time.time
    store: FailureStore = field(default_factory=MemoryStore)
    warn: Callable[[str], None] | None = None

    def failures(self, addr: str) -> int:
        return len(self.store.stamps(addr, self.clock() - self.window))

    def blocked(self, addr: str) -> bool:
        """Has this client used up its failures?"""
        return self.limit > 0 and self.failures(addr) >= self.limit

    def record_failure(self, addr: str) -> float:
        """Count one failure; return how long to wait before replying."""
        now = self.clock()
        try:
            self.store.add(addr, now, now - self.window)
        except OSError as exc:
            # The directory is gone or unwritable: count in memory from now on.
            if self.warn is not None:
                self.warn(f"cannot record an AUTH failure: {exc.strerror or exc}; "
                          "counting failures in this process only")
            self.store = MemoryStore()
            self.store.add(addr, now, now - self.window)
        return min(self.delay * max(self.failures(addr), 1), self.max_delay)
