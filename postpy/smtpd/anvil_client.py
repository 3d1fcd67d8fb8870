"""smtpd's side of anvil (``private/anvil``): shared client counts and rates.

One :class:`AnvilClient` per smtpd process holds one connection, opened on
first use and kept; the sessions of the process take turns on it (one
request and its reply at a time).  The conversation is
:class:`~postpy.ipc.messages.AnvilRequest` /
:class:`~postpy.ipc.messages.AnvilReply` (:mod:`postpy.ipc.messages`).

anvil never decides whether mail is accepted: when it cannot be reached,
does not answer within ``timeout`` seconds or answers nonsense,
:meth:`AnvilClient.request` returns None, the caller applies no limit,
and one ``warning:`` line says the limits are off; the next try is
``retry`` seconds later, and the warning comes again only after anvil was
reached in between.  A connection that breaks before the reply (anvil was
restarted) is reopened once at once, silently: master starts a new anvil
for it.
"""

from __future__ import annotations

import asyncio
import time

from postpy.ipc import codec
from postpy.ipc.messages import ANVIL_OK, AnvilReply, AnvilRequest
from postpy.util import maillog

PEER = "anvil"
TIMEOUT = 2.0       # seconds for one request, reconnecting included (a new anvil starts in ~0.3 s)
RETRY = 5.0         # seconds before anvil is tried again after a failure


class AnvilClient:
    def __init__(self, path: str = "private/anvil", timeout: float = TIMEOUT, retry: float = RETRY) -> None:
        self.path = path
        self.timeout = timeout
        self.retry = retry
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock: asyncio.Lock | None = None
        self._retry_at = 0.0
        self._warned = False

    @property
    def reachable(self) -> bool:
        """False after a failure, until a request succeeds again."""
        return not self._warned

    async def request(self, request: str, ident: str) -> AnvilReply | None:
        """anvil's reply, or None: no answer, so no limit."""
        if self._writer is None and time.monotonic() < self._retry_at:
            return None
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._lock:
                    reply = await self._exchange(AnvilRequest(request, ident))
        except TimeoutError:
            self._fail(f"no reply within {self.timeout:g}s")
            return None
        except (OSError, EOFError, codec.IpcError) as exc:
            self._fail(str(exc) or type(exc).__name__)
            return None
        if reply.status != ANVIL_OK:
            return None
        self._warned = False
        return reply

    async def _exchange(self, msg: AnvilRequest) -> AnvilReply:
        fresh = self._writer is None
        for attempt in (0, 1):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_unix_connection(self.path)
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(codec.encode(msg))
                await self._writer.drain()
                return codec.expect(await codec.async_recv(self._reader, PEER), AnvilReply, PEER)
            except (ConnectionError, EOFError):
                self._close()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        self._close()
        self._retry_at = time.monotonic() + self.retry
        if not self._warned:
            self._warned = True
            maillog.warning(f"connect to {self.path} service: {why}; "
                            "client connection and rate limits are off until it answers")

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def close(self) -> None:
        self._close()
