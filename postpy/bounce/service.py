"""bounce(8): writes delivery status notifications and sends them via cleanup.

master starts it on demand (``bounce unix - - n - 0 bounce``), as
mail_owner, in the queue directory; each process serves one connection on
``private/bounce`` at a time through the skeleton's single_server loop
(:func:`postpy.server.skeleton.run_sync_server`).  Its client is qmgr,
which may keep the connection open and send one
:class:`postpy.ipc.messages.BounceRequest` after another; each gets one
:class:`postpy.ipc.messages.BounceResult`.  The connection ends at EOF.

What a request becomes is in :mod:`postpy.bounce.notice`; the notice's
format in :mod:`postpy.bounce.dsn`; its wording in :mod:`postpy.bounce.texts`.
"""

from __future__ import annotations

import socket

from postpy.bounce.notice import BounceSettings, handle
from postpy.ipc import codec
from postpy.ipc.messages import BounceRequest
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog


def serve(conn: socket.socket, settings: BounceSettings, peer: str = "qmgr") -> int:
    """Answer requests on one connection until EOF; the number served."""
    conn.settimeout(settings.timeout)
    served = 0
    while True:
        try:
            msg = codec.recv(conn, peer, settings.max_frame)
        except EOFError:
            return served
        except (OSError, codec.IpcError) as exc:
            maillog.warning(f"bounce: {exc}")
            return served
        try:
            request = codec.expect(msg, BounceRequest, peer)
        except codec.IpcError as exc:
            maillog.warning(f"bounce: {exc}")
            return served
        codec.send(conn, handle(request, settings))
        served += 1


def main() -> None:
    ctx = skeleton.prepare("bounce")
    settings = BounceSettings.from_config(ctx.cfg)

    def handler(_ctx: ServerContext, conn: socket.socket) -> None:
        serve(conn, settings)

    skeleton.run_sync_server(ctx, handler)
