"""qmgr: the queue manager, the one process that owns the active queue.

Runs as mail_owner, one process (maxproc 1), kept running by master.

Life of a message here:

1. cleanup writes ``incoming/ID`` and triggers ``public/qmgr``; qmgr renames
   it into ``active/`` at once (bounded by ``qmgr_message_active_limit``)
   and logs ``from=<...>, size=..., nrcpt=... (queue active)``.
2. Each pending recipient is routed (:mod:`postpy.qmgr.resolve`) and the
   recipients are grouped by transport and next hop into delivery
   requests, handed to :class:`postpy.qmgr.transport.AgentPool`.  A
   transport that is no master.cf service defers its recipients with a
   warning (:mod:`postpy.qmgr.services`).
3. Each result is recorded in the queue file before anything else happens:
   delivered recipients get status ``D`` (``S`` when a success notice is
   owed), bounced ones an ``L`` record and status ``B``, deferred ones an
   ``L`` record.  A crash after that point never repeats the delivery.
4. When all requests of the message are back: owed notices go to bounce;
   then the file is removed (nothing pending) or moved to ``deferred/``
   with its mtime set to the next attempt (the time since arrival, clamped
   to ``minimal_backoff_time`` .. ``maximal_backoff_time``: exponential
   backoff).  After ``maximal_queue_lifetime`` the pending recipients are
   returned to the sender.

``deferred/`` is scanned every ``queue_run_delay`` and on a flush trigger.
Files found in ``active/`` at start (a crash, a reload) are taken up again;
their recorded recipients are not delivered twice.

Triggers on ``public/qmgr`` (one connection each): ``A`` or ``W`` scan
incoming (``W`` also the deferred queue when due), ``F`` flush all
deferred mail, ``I<queue id>\\n`` deliver one message now, ``S<site>\\n``
deliver deferred mail for a domain now.

Stopping (master's reload or stop, or master gone): qmgr schedules nothing
more, starts no delivery it has not sent yet, waits for the replies to the
requests already sent (up to ``SHUTDOWN_GRACE``, less than master's own
grace) and records each one before it returns; the skeleton keeps the event
loop and its executor alive until then.  What is not finished stays in
``active/`` for the next qmgr.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from postpy.config.mastercf import load_master_cf
from postpy.ipc.messages import (
    DeliveryRcpt,
    DeliveryRequest,
    RecipientResult,
)
from postpy.mail.events import Timing, log_delivery
from postpy.qmgr import services
from postpy.qmgr.filter import filter_route
from postpy.qmgr.message import ActiveMessage, outcome
from postpy.qmgr.notices import request_notice
from postpy.qmgr.resolve import Route, domain_of, resolve
from postpy.qmgr.transport import AgentPool, Job
from postpy.queue import layout, qfile
from postpy.queue.layout import ACTIVE, DEFERRED, INCOMING
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog

SHUTDOWN_GRACE = 15.0      # below master's STOP_GRACE: qmgr records before it is killed


class Qmgr:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.active: dict[str, ActiveMessage] = {}
        self.pools: dict[str, AgentPool] = {}
        self.wake = asyncio.Event()
        self.scan_incoming_wanted = True
        self.flush_all = False
        self.flush_ids: set[str] = set()
        self.flush_sites: set[str] = set()
        self.next_deferred_scan = 0.0
        self.active_limit = self.cfg.get_int("qmgr_message_active_limit")
        self.recipient_limit = self.cfg.get_int("qmgr_message_recipient_limit")
        self.recipients = 0               # recipients of the messages in self.active
        self.deferred_waiting = False     # due deferred mail left behind for want of room
        self.maxproc = {s.name: s.maxproc for s in load_master_cf(self.cfg.config_dir).services}
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- triggers -------------------------------------------------------------
    async def on_trigger(self, _ctx: ServerContext, reader: asyncio.StreamReader, writer: Any) -> None:
        try:
            data = await asyncio.wait_for(reader.read(1024), 5)
        except TimeoutError:
            return
        if not self._may_flush(writer):
            data = b"\n".join(line.replace(b"F", b"") for line in data.split(b"\n")
                               if line[:1] not in (b"I", b"S"))
        for line in data.split(b"\n"):
            if line[:1] == b"I":
                self.flush_ids.add(line[1:].decode("ascii", "replace").strip())
                line = b""
            elif line[:1] == b"S":
                self.flush_sites.add(line[1:].decode("ascii", "replace").strip().lower())
                line = b""
            for byte in line:
                if byte in b"AW":
                    self.scan_incoming_wanted = True
                if byte == ord("W") and time.monotonic() >= self.next_deferred_scan:
                    self.next_deferred_scan = 0.0
                if byte == ord("F"):
                    self.flush_all = True
        self.wake.set()

    def _may_flush(self, writer: Any) -> bool:
        """Flush requests (F, I, S) only from authorized_flush_users (SO_PEERCRED);
        anyone may ask for a scan of incoming, which is harmless."""
        from postpy.mail.authorized import AccessError, peer_uid, privileged_uids, uid_allowed

        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
            allowed = uid_allowed(self.cfg.get_list("authorized_flush_users"), uid,
                                  privileged=(*privileged_uids(self.cfg.get("mail_owner")), os.getuid()))
        except (OSError, AccessError) as exc:
            maillog.warning(f"flush request: cannot check the client: {exc}")
            return False
        if not allowed:
            maillog.warning(f"flush request from uid {uid} refused: not in authorized_flush_users")
        return allowed

    # -- moving files in ------------------------------------------------------
    def _room(self) -> bool:
        """Below qmgr_message_active_limit and qmgr_message_recipient_limit?"""
        return len(self.active) < self.active_limit and self.recipients < self.recipient_limit

    def _activate(self, queue: str, queue_id: str) -> None:
        if queue_id in self.active or not self._room():
            return
        if queue != ACTIVE:
            try:
                os.rename(os.path.join(queue, queue_id), os.path.join(ACTIVE, queue_id))
            except FileNotFoundError:
                return        # postsuper moved or removed it meanwhile
        path = os.path.join(ACTIVE, queue_id)
        try:
            env = qfile.read_envelope(path)
        except FileNotFoundError:
            return
        except (qfile.CorruptQueueFile, OSError, ValueError) as exc:
            layout.quarantine(".", ACTIVE, queue_id, str(exc))
            return
        msg = ActiveMessage(queue_id, env)
        self.active[queue_id] = msg
        self.recipients += len(env.recipients)
        maillog.info(f"{queue_id}: from=<{env.sender}>, size={env.content_length}, "
                     f"nrcpt={len(env.recipients)} (queue active)")
        self._schedule(msg)

    def _scan_incoming(self) -> None:
        self.scan_incoming_wanted = False
        for queue_id in layout.list_queue(".", INCOMING):
            if not self._room():
                self.scan_incoming_wanted = True     # come back when room frees up
                return
            self._activate(INCOMING, queue_id)

    def _scan_deferred(self) -> None:
        now = time.time()
        force, ids, sites = self.flush_all, self.flush_ids, self.flush_sites
        self.flush_all, self.flush_ids, self.flush_sites = False, set(), set()
        self.next_deferred_scan = time.monotonic() + self.cfg.get_time("queue_run_delay")
        self.deferred_waiting = False
        for queue_id in layout.list_queue(".", DEFERRED):
            if not self._room():
                # Full: look again as soon as a message leaves the active queue.
                self.deferred_waiting = True
                self.next_deferred_scan = 0.0
                return
            path = os.path.join(DEFERRED, queue_id)
            due = force or queue_id in ids
            if not due and sites:
                try:
                    env = qfile.read_envelope(path)
                    due = any(domain_of(r.address) in sites for r in env.pending())
                except (OSError, qfile.CorruptQueueFile):
                    due = False
            if not due:
                try:
                    due = os.stat(path).st_mtime <= now
                except FileNotFoundError:
                    continue
            if due:
                self._activate(DEFERRED, queue_id)

    # -- scheduling -----------------------------------------------------------
    def _pool(self, transport: str) -> AgentPool:
        pool = self.pools.get(transport)
        if pool is None:
            cfg = self.cfg
            limit = self.maxproc.get(transport) or cfg.get_int("default_process_limit")
            dest_param = f"{transport}_destination_concurrency_limit"
            if cfg.is_known(dest_param):
                dest_limit = cfg.get_int(dest_param)
            else:
                dest_limit = cfg.get_int("default_destination_concurrency_limit")
            pool = AgentPool(transport, os.path.join("private", transport), limit, dest_limit,
                             cfg.get_time("daemon_timeout"), cfg.get_size("ipc_max_frame"))
            self.pools[transport] = pool
        return pool

    def _recipient_limit(self, transport: str) -> int:
        if transport == "local":
            return 1
        name = f"{transport}_destination_recipient_limit"
        return self.cfg.get_int(name) if self.cfg.is_known(name) else 50

    def _schedule(self, msg: ActiveMessage) -> None:
        env = msg.env
        pending = env.pending()
        if pending and self._expired(env):
            self._expire(msg, pending)
            pending = []
        groups: dict[tuple[str, str], list[qfile.Recipient]] = {}
        immediate: list[RecipientResult] = []
        warned: set[str] = set()
        for rcpt in pending:
            route = filter_route(env.attrs, rcpt.address) or resolve(self.cfg, rcpt.address, env.sender)
            if not route.error:
                route = self._available(msg, route, warned)
            if route.error:
                immediate.append(self._route_error(msg, rcpt, route))
            else:
                groups.setdefault((route.transport, route.nexthop), []).append(rcpt)
        if immediate:
            self._record(msg, immediate)
        for (transport, nexthop), rcpts in groups.items():
            limit = self._recipient_limit(transport)
            for start in range(0, len(rcpts), limit):
                chunk = rcpts[start:start + limit]
                request = DeliveryRequest(
                    queue_id=msg.queue_id, queue_name=ACTIVE, sender=env.sender, nexthop=nexthop,
                    recipients=[DeliveryRcpt(r.index, r.address, r.orig, r.orcpt, r.notify) for r in chunk],
                    arrival=env.arrival, active_time=msg.active_time, transport=transport)
                destination = chunk[0].address.lower() if transport == "local" else nexthop.lower()
                msg.outstanding += 1
                self._pool(transport).submit(Job(request, destination, self._results_for(msg)))
        if not msg.outstanding:
            self._spawn(self._finish(msg))

    def _available(self, msg: ActiveMessage, route: Route, warned: set[str]) -> Route:
        """The route, or a deferral when its transport is no master.cf service
        (one warning per message and transport; see :mod:`postpy.qmgr.services`)."""
        reason = services.unavailable_reason(self.cfg, route.transport, self.maxproc)
        if reason is None:
            return route
        if route.transport not in warned:
            warned.add(route.transport)
            maillog.warning(f"{msg.queue_id}: {services.TEXT}: {reason}")
        return Route("retry", "", f"{services.DSN} {services.TEXT}", retry=True)

    def _route_error(self, msg: ActiveMessage, rcpt: qfile.Recipient, route: Route) -> RecipientResult:
        dsn, _, text = route.error.partition(" ")
        status = "deferred" if route.retry else "bounced"
        log_delivery(msg.queue_id, rcpt.address, orig=rcpt.orig, relay="none",
                     timing=Timing(msg.env.arrival, msg.active_time, time.time()),
                     dsn=dsn, status=status, text=text)
        return RecipientResult(rcpt.index, status, dsn, text, "none")

    def _expired(self, env: qfile.Envelope) -> bool:
        name = "bounce_queue_lifetime" if env.sender == "" else "maximal_queue_lifetime"
        lifetime = self.cfg.get_time(name)
        attempted = bool(env.log)
        return attempted and time.time() - env.arrival >= lifetime

    def _expire(self, msg: ActiveMessage, pending: list[qfile.Recipient]) -> None:
        last = {e.index: e for e in msg.env.log if e.action == "delayed"}
        entries = []
        for rcpt in pending:
            entry = last.get(rcpt.index)
            dsn, text = (entry.dsn, entry.text) if entry else ("4.4.7", "message expired")
            entries.append(qfile.LogEntry(rcpt.index, "failed", dsn, text))
        self._write_outcome(msg, {qfile.BOUNCED: pending}, entries)
        msg.env.log.extend(entries)
        maillog.info(f"{msg.queue_id}: from=<{msg.env.sender}>, status=expired, returned to sender")

    # -- results --------------------------------------------------------------
    def _write_outcome(self, msg: ActiveMessage, statuses: dict[str, list[qfile.Recipient]],
                       entries: list[qfile.LogEntry]) -> None:
        """Make the outcome durable in the queue file, before anything else
        happens to the message (one pwrite per status byte, one fsync)."""
        if (not statuses and not entries) or msg.gone:
            return
        try:
            qfile.record_results(msg.path, statuses, entries)
        except FileNotFoundError:
            # postsuper removed or held the message meanwhile: it is gone from here.
            msg.gone = True
        except OSError as exc:
            # The queue file is unwritable: an invariant is broken.
            maillog.fatal(f"{msg.queue_id}: cannot record delivery status in {msg.path}: {exc}")

    def _record(self, msg: ActiveMessage, results: list[RecipientResult]) -> None:
        statuses, entries = outcome(msg, results)
        self._write_outcome(msg, statuses, entries)
        msg.env.log.extend(entries)

    async def _record_async(self, msg: ActiveMessage, results: list[RecipientResult]) -> None:
        """The same, with the fsync in a worker thread so scheduling goes on meanwhile;
        the message is finished only after its last result is on disk."""
        statuses, entries = outcome(msg, results)
        await asyncio.to_thread(self._write_outcome, msg, statuses, entries)
        msg.env.log.extend(entries)
        msg.outstanding -= 1
        if msg.outstanding == 0:
            await self._finish(msg)

    def _results_for(self, msg: ActiveMessage) -> Callable[[list[RecipientResult]], None]:
        return lambda results: self._spawn(self._record_async(msg, results))

    async def _notify(self, msg: ActiveMessage, kind: str, status: str) -> None:
        rcpts = [r for r in msg.env.recipients if r.status == status]
        if not rcpts:
            return
        if await request_notice(msg.queue_id, kind, [r.index for r in rcpts]):
            self._write_outcome(msg, {qfile.DONE: rcpts}, [])

    async def _finish(self, msg: ActiveMessage) -> None:
        try:
            await self._notify(msg, "failure", qfile.BOUNCED)
            await self._notify(msg, "success", qfile.SUCCESS)
            pending = msg.env.pending()
            owed = [r for r in msg.env.recipients if r.status in (qfile.BOUNCED, qfile.SUCCESS)]
            if pending:
                await self._delay_warning(msg, pending)
        finally:
            if msg.gone or not os.path.exists(msg.path):
                # postsuper deleted or held it while we waited: nothing left to do.
                self._forget(msg)
        if msg.queue_id not in self.active:
            return
        if not pending and not owed:
            try:
                os.unlink(msg.path)
            except FileNotFoundError:
                pass
            maillog.info(f"{msg.queue_id}: removed")
        else:
            self._defer(msg)
        self._forget(msg)
        if self.scan_incoming_wanted or self.deferred_waiting:
            self.wake.set()

    def _forget(self, msg: ActiveMessage) -> None:
        if self.active.pop(msg.queue_id, None) is not None:
            self.recipients -= len(msg.env.recipients)

    async def _delay_warning(self, msg: ActiveMessage, pending: list[qfile.Recipient]) -> None:
        warn_after = self.cfg.get_time("delay_warning_time")
        if not warn_after or time.time() - msg.env.arrival < warn_after or msg.env.sender == "":
            return
        if any(e.action == "warned" for e in msg.env.log):
            return
        if await request_notice(msg.queue_id, "delay", [r.index for r in pending]):
            entry = qfile.LogEntry(pending[0].index, "warned", "4.0.0", "delay warning sent")
            self._write_outcome(msg, {}, [entry])
            msg.env.log.append(entry)

    def _defer(self, msg: ActiveMessage) -> None:
        age = time.time() - msg.env.arrival
        delay = min(max(age, self.cfg.get_time("minimal_backoff_time")), self.cfg.get_time("maximal_backoff_time"))
        target = os.path.join(DEFERRED, msg.queue_id)
        try:
            os.rename(msg.path, target)
            when = time.time() + delay
            os.utime(target, (when, when))
        except FileNotFoundError:
            pass

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            maillog.fatal(f"qmgr: {type(exc).__name__}: {exc}")

    # -- main loop ------------------------------------------------------------
    async def run(self, _ctx: ServerContext) -> None:
        for queue_id in layout.list_queue(".", ACTIVE):
            self._activate(ACTIVE, queue_id)
        while not self.ctx.stopping:
            if self.scan_incoming_wanted:
                self._scan_incoming()
            if self.flush_all or self.flush_ids or self.flush_sites or \
                    time.monotonic() >= self.next_deferred_scan:
                self._scan_deferred()
            for pool in self.pools.values():
                pool.close_idle()
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass
            self.wake.clear()
        await self._drain()

    async def _drain(self) -> None:
        """On reload/stop: start nothing new; let deliveries in flight finish
        and their results be recorded (every one, before we return)."""
        for pool in self.pools.values():
            pool.stop()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while (self.tasks or any(p.busy() for p in self.pools.values())) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.tasks:
            # Past the deadline: results already received are still written.
            await asyncio.wait(list(self.tasks), timeout=5.0)


def main() -> None:
    ctx = skeleton.prepare("qmgr")
    qmgr = Qmgr(ctx)
    ctx.on_stop.append(qmgr.wake.set)     # stop at once, not at the next 1 s tick
    skeleton.run_async_server(ctx, qmgr.on_trigger, persistent=True, busy_at=1 << 30,
                              drain_on_stop=True, startup=qmgr.run)
