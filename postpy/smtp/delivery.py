"""One delivery request -> one result per recipient, over SMTP.

For a :class:`postpy.ipc.messages.DeliveryRequest` the agent

1. re-reads the message from its queue file (:mod:`postpy.smtp.message`);
2. waits for a slot: at most ``smtp_destination_concurrency_limit``
   sessions per next hop in this process (qmgr bounds it too; this keeps a
   process honest when several qmgr connections share it);
3. reuses a parked session for the next hop (:mod:`postpy.smtp.cache`; per
   sender too with sender-dependent SASL logins), or takes the next hop's
   TLS policy (:mod:`postpy.smtp.tls_policy`) and
   looks up the servers (:mod:`postpy.smtp.dns`; :mod:`postpy.smtp.lmtp`
   for the lmtp program) and tries them in order:
   the next server on a connection failure, a 4xx (or 5xx) greeting, a TLS
   failure or a 421, within ``smtp_mx_address_limit`` addresses and
   ``smtp_mx_session_limit`` greeted sessions;
4. turns replies and failures into outcomes (2xx sent, 4xx deferred, 5xx
   bounced, with the server's text), logs each with
   :func:`postpy.mail.events.log_delivery` and answers qmgr.

This is the one place where failures become ``RecipientResult`` records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from postpy.ipc.messages import DeliveryRequest, DeliveryResult, RecipientResult
from postpy.mail.events import Timing, log_delivery
from postpy.queue.qfile import CorruptQueueFile
from postpy.smtp.cache import ConnectionCache
from postpy.smtp.client import Session, TlsFallback
from postpy.smtp.dns import Target
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.message import BadRequest, Outcome, OutMessage, load_message
from postpy.smtp.settings import AgentSettings
from postpy.smtp.tls import TlsPolicy
from postpy.util import maillog


class Destinations(Protocol):
    """Next hop -> servers to try: :class:`postpy.smtp.dns.DestinationResolver` (SMTP)
    or :class:`postpy.smtp.lmtp.LmtpDestinations` (LMTP)."""

    async def targets(self, nexthop: str, default_port: int) -> list[Target]: ...


class Agent:
    """Everything one smtp (or lmtp) process shares between its requests."""

    def __init__(self, settings: AgentSettings, destinations: Destinations) -> None:
        self.settings = settings
        self.destinations = destinations
        self.cache = ConnectionCache(settings.cache_time_limit, settings.reuse_time_limit)
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def _slot(self, nexthop: str) -> AsyncIterator[None]:
        key = nexthop.lower()
        sem, users = self._slots.get(key) or (asyncio.Semaphore(self.settings.destination_limit), 0)
        self._slots[key] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._slots[key]
            if users <= 1:
                del self._slots[key]
            else:
                self._slots[key] = (sem, users - 1)

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        now = time.time()
        timing = Timing(arrival=request.arrival or now, active=request.active_time or now,
                        dispatch=request.dispatch_time or now)
        path = f"{request.queue_name}/{request.queue_id}"
        relay, conn_use = "none", 0
        try:
            msg = load_message(path, request)
        except (OSError, CorruptQueueFile, BadRequest) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            maillog.warning(f"{request.queue_id}: cannot read queue file {path}: {reason}")
            outcomes = [Outcome("deferred", "4.3.0", f"mail system error: cannot read queue file: "
                                f"{reason}")] * len(request.recipients)
        else:
            async with self._slot(request.nexthop):
                outcomes, relay, conn_use = await self._attempt(request.nexthop, msg, timing,
                                                                request.sender)
        timing.done = time.time()
        results = []
        for rcpt, outcome in zip(request.recipients, outcomes, strict=True):
            log_delivery(request.queue_id, rcpt.address, orig=rcpt.orig, relay=relay, timing=timing,
                         dsn=outcome.dsn, status=outcome.status, text=outcome.text,
                         conn_use=conn_use)
            results.append(RecipientResult(rcpt.index, outcome.status, outcome.dsn, outcome.text,
                                           relay))
        return DeliveryResult(request.queue_id, results)

    def _cache_key(self, nexthop: str, sender: str) -> str:
        """Sessions are shared by next hop; by sender too when the login depends on it."""
        sasl = self.settings.client.sasl
        if sasl is not None and sasl.enable and sasl.sender_dependent:
            return f"{nexthop}\n{sender.lower()}"
        return nexthop

    async def _attempt(self, nexthop: str, msg: OutMessage, timing: Timing,
                       sender: str = "") -> tuple[list[Outcome], str, int]:
        """Outcomes, the relay that gave them ("none": no server reached) and its use count."""
        s = self.settings
        count = len(msg.recipients)
        sender = sender or msg.sender
        key = self._cache_key(nexthop, sender)
        session = self.cache.take(key) if s.cache_on_demand else None
        if session is not None:
            timing.connected = time.time()
            try:
                outcomes = await session.send_message(msg)
                self._release(key, session)
                return outcomes, session.target.relay, session.uses
            except DeliveryFailure:
                session.close()        # it went stale while parked: start afresh
        try:
            policy, domain = (s.tls_policies.for_nexthop(nexthop) if s.tls_policies is not None
                              else (s.client.tls, nexthop))
            targets = await self.destinations.targets(nexthop, s.default_port)
        except DeliveryFailure as exc:
            return [_failed(exc)] * count, "none", 0
        if s.address_limit:
            targets = targets[:s.address_limit]
        failure: DeliveryFailure | None = None
        sessions = 0
        for target in targets:
            if s.session_limit and sessions >= s.session_limit:
                break
            try:
                session = await self._open(target, nexthop, policy, domain, sender)
            except DeliveryFailure as exc:
                failure = exc
                if exc.next_host:
                    continue
                break
            sessions += 1
            timing.connected = time.time()
            try:
                outcomes = await session.send_message(msg)
            except DeliveryFailure as exc:
                session.close()
                failure = exc
                if exc.next_host:
                    continue
                break
            self._release(key, session)
            return outcomes, session.target.relay, session.uses
        assert failure is not None
        return [_failed(failure)] * count, failure.relay or "none", 0

    async def _open(self, target: Target, nexthop: str, policy: TlsPolicy, domain: str,
                    sender: str) -> Session:
        client = self.settings.client
        try:
            return await Session.open(target, client, nexthop, policy=policy, domain=domain,
                                      sender=sender)
        except TlsFallback as exc:
            maillog.info(f"{exc.text}; retrying {target.relay} without TLS")
            return await Session.open(target, client, nexthop, use_tls=False, policy=policy,
                                      domain=domain, sender=sender)

    def _release(self, nexthop: str, session: Session) -> None:
        if self.settings.cache_on_demand and session.alive:
            self.cache.put(nexthop, session)
        else:
            self.cache.retire(session)


def _failed(failure: DeliveryFailure) -> Outcome:
    return Outcome(failure.status, failure.dsn, failure.text)
