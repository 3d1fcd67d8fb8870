"""anvil(8): client connection counts and event rates shared by every smtpd process.

master starts it on demand (``anvil unix - - n - 1 anvil``: one process,
as mail_owner); each smtpd process keeps one connection to
``private/anvil`` open (:mod:`postpy.smtpd.anvil_client`) and sends one
:class:`~postpy.ipc.messages.AnvilRequest` after another, each answered by
one :class:`~postpy.ipc.messages.AnvilReply` (the conversation is in
:mod:`postpy.ipc.messages`; the counting in :mod:`postpy.anvil.table`).

The connections an smtpd process registered are forgotten when its
connection to anvil closes, so an smtpd that dies leaves no phantom
connections behind; a ``disconnect`` for an ident the connection did not
register is ignored (an smtpd that reconnected after anvil restarted).

A malformed request costs a ``warning:`` line: a frame that decodes badly
is answered with status 1 and the conversation goes on; a broken frame
(bad length or kind) ends that one connection.  anvil itself carries on.

Every ``anvil_status_update_time`` and when it exits, anvil logs the
extremes it saw, as Postfix does::

    statistics: max connection rate 3/60s for (127.0.0.1:25:192.0.2.7) at Jan  2 15:04:05

The state lives in memory only: a restarted anvil starts from zero (as
Postfix's does).  A reload makes it exit at once (after its statistics);
the smtpd processes reconnect to the new one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

from postpy.anvil.table import Table
from postpy.ipc import codec
from postpy.ipc.messages import ANVIL_FAIL, ANVIL_OK, ANVIL_REQUESTS, AnvilReply, AnvilRequest
from postpy.server import skeleton
from postpy.util import maillog

PEER = "anvil client"
SWEEP_INTERVAL = 1.0          # seconds between sweeps of idle clients (at most)


def answer(table: Table, request: AnvilRequest, mine: Counter[str]) -> AnvilReply:
    """Carry out one request; ``mine`` counts the connections this client registered."""
    kind, ident = request.request, request.ident
    if kind == "connect":
        entry = table.connect(ident)
        mine[ident] += 1
        return AnvilReply(ANVIL_OK, count=entry.count, rate=entry.rate)
    if kind == "disconnect":
        if mine[ident] > 0:
            mine[ident] -= 1
            table.disconnect(ident)
        if mine[ident] <= 0:
            del mine[ident]
        return AnvilReply(ANVIL_OK)
    if kind in ("message", "recipient", "newtls", "auth"):
        return AnvilReply(ANVIL_OK, rate=table.event(kind, ident))
    if kind in ("newtls_report", "lookup"):
        e = table.lookup(ident)
        if kind == "newtls_report":
            return AnvilReply(ANVIL_OK, rate=e.newtls)
        return AnvilReply(ANVIL_OK, count=e.count, rate=e.rate, message=e.message,
                          recipient=e.recipient, newtls=e.newtls, auth=e.auth)
    return AnvilReply(ANVIL_FAIL)


async def serve(table: Table, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                max_frame: int = codec.DEFAULT_MAX_FRAME) -> None:
    """One client's conversation, until it closes or breaks the framing."""
    mine: Counter[str] = Counter()
    try:
        while True:
            try:
                kind, payload = await codec.async_recv_frame(reader, PEER, max_frame)
            except EOFError:
                return
            except codec.IpcError as exc:
                maillog.warning(f"anvil: {exc}; closing the connection")
                return
            try:
                if kind != codec.ATTRS:
                    raise codec.IpcError(f"expected attributes from {PEER}, got frame kind {kind.decode()}")
                request = codec.expect(codec.decode(payload, PEER), AnvilRequest, PEER)
                if request.request not in ANVIL_REQUESTS:
                    raise codec.IpcError(f"unknown request {request.request[:40]!r} from {PEER}")
                reply = answer(table, request, mine)
            except codec.IpcError as exc:
                maillog.warning(f"anvil: {exc}")
                reply = AnvilReply(ANVIL_FAIL)
            writer.write(codec.encode(reply))
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        for ident, n in mine.items():
            table.disconnect(ident, n)
        writer.close()


def log_statistics(table: Table) -> None:
    for line in table.statistics():
        maillog.info(line)


async def housekeeping(ctx: skeleton.ServerContext, table: Table, status_every: float) -> None:
    """Forget idle clients every time unit; log statistics every ``status_every``."""
    next_status = time.monotonic() + status_every
    while not ctx.stopping:
        await asyncio.sleep(min(SWEEP_INTERVAL, table.unit))
        table.sweep()
        if time.monotonic() >= next_status:
            log_statistics(table)
            next_status = time.monotonic() + status_every


def main() -> None:
    ctx = skeleton.prepare("anvil")
    table = Table(unit=ctx.cfg.get_time("anvil_rate_time_unit"))
    status_every = ctx.cfg.get_time("anvil_status_update_time")
    max_frame = ctx.cfg.get_size("ipc_max_frame")

    def exit_now() -> None:
        """Any stop (reload, stop, master gone): nothing here is worth waiting for."""
        log_statistics(table)
        os._exit(0)

    ctx.on_stop.append(exit_now)

    async def handle(_ctx: skeleton.ServerContext, reader: Any, writer: Any) -> None:
        await serve(table, reader, writer, max_frame)

    async def startup(c: skeleton.ServerContext) -> None:
        await housekeeping(c, table, status_every)

    try:
        skeleton.run_async_server(ctx, handle, busy_at=1 << 30, startup=startup)
    finally:
        log_statistics(table)
