"""Connection cache: keep a finished SMTP session open for the next message.

After a transaction that ended cleanly, the session is parked here under
its next hop for ``smtp_connection_cache_time_limit`` seconds.  The next
request for the same next hop takes it instead of looking up MX records and
connecting again; a parked session that is not taken in time gets QUIT.  A
session older than ``smtp_connection_reuse_time_limit`` is not parked, so a
long-lived connection cannot pin all mail to one server forever.

Sessions live in this process only (Postfix shares them through scache(8);
here one process runs many sessions, so a dict is enough).
"""

from __future__ import annotations

import asyncio
import time

from postpy.smtp.client import Session


class ConnectionCache:
    def __init__(self, idle_limit: float, reuse_limit: float) -> None:
        self.idle_limit = idle_limit
        self.reuse_limit = reuse_limit
        self._idle: dict[str, list[tuple[Session, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def _fresh(self, session: Session) -> bool:
        return session.alive and time.monotonic() - session.created < self.reuse_limit

    def take(self, key: str) -> Session | None:
        """A live parked session for this next hop, or None."""
        entries = self._idle.get(key)
        while entries:
            session, timer = entries.pop()
            timer.cancel()
            if self._fresh(session):
                if not entries:
                    del self._idle[key]
                return session
            self.retire(session)
        self._idle.pop(key, None)
        return None

    def put(self, key: str, session: Session) -> None:
        """Park a session, or QUIT it when it cannot be reused."""
        if not self._fresh(session):
            self.retire(session)
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_limit, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))

    def _expire(self, key: str, session: Session) -> None:
        entries = self._idle.get(key, [])
        for i, (parked, _) in enumerate(entries):
            if parked is session:
                del entries[i]
                break
        if not entries:
            self._idle.pop(key, None)
        self.retire(session)

    def retire(self, session: Session) -> None:
        """QUIT in the background (the delivery result need not wait for it)."""
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close_all(self) -> None:
        for entries in self._idle.values():
            for session, timer in entries:
                timer.cancel()
                session.close()
        self._idle.clear()
