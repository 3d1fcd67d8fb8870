"""qmgr's side of the bounce conversation (see :mod:`postpy.ipc.messages`).

One connection to ``private/bounce`` per notice: :class:`BounceRequest`
out, :class:`BounceResult` back.  A notice that cannot be sent now is not
an error: the recipients keep their "notice owed" status (``B`` or ``S``)
and qmgr asks again on the message's next pass.
"""

from __future__ import annotations

import asyncio
import os

from postpy.ipc import codec
from postpy.ipc.messages import BounceRequest, BounceResult
from postpy.queue.layout import ACTIVE
from postpy.util import maillog

CONNECT_TIMEOUT = 30.0
ANSWER_TIMEOUT = 120.0


async def request_notice(queue_id: str, kind: str, indexes: list[int]) -> bool:
    """Ask bounce for a ``failure``, ``delay`` or ``success`` notice; True when sent."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(os.path.join("private", "bounce")), CONNECT_TIMEOUT)
        try:
            writer.write(codec.encode(BounceRequest(queue_id, ACTIVE, kind, indexes)))
            await writer.drain()
            reply = await asyncio.wait_for(codec.async_recv(reader, "bounce"), ANSWER_TIMEOUT)
            result = codec.expect(reply, BounceResult, "bounce")
        finally:
            writer.close()
    except (TimeoutError, OSError, EOFError, codec.IpcError) as exc:
        maillog.warning(f"{queue_id}: cannot send {kind} notice: {exc or type(exc).__name__}")
        return False
    if result.status != "ok":
        maillog.warning(f"{queue_id}: {kind} notice deferred: {result.text}")
        return False
    return True
