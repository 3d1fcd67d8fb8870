"""local(8): the local delivery agent.

master starts it as ``local unix - n n - - local`` (``unpriv = n``: it
stays root when master is root, to act as each recipient; see
:mod:`postpy.local.privileges` for what runs with which ids).  Each process
serves one connection at a time (:func:`postpy.server.skeleton.run_sync_server`);
qmgr keeps the connection open and sends many requests over it::

    qmgr -> local   DeliveryRequest   (one message, some of its recipients)
    local -> qmgr   DeliveryResult    (one RecipientResult per recipient)

until it closes the connection.  The message is read from the queue file
named in the request (queue-relative: the skeleton made the queue
directory our working directory); what happens to each recipient is in
:mod:`postpy.local.deliver`, how a recipient expands in
:mod:`postpy.local.resolve`, and the destination kinds in
:mod:`postpy.local.mailbox`, :mod:`postpy.local.maildir`,
:mod:`postpy.local.file`, :mod:`postpy.local.pipe` and
:mod:`postpy.local.forward`.
"""

from __future__ import annotations

import socket

from postpy.config.maincf import ConfigError
from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRequest
from postpy.local.deliver import LocalAgent
from postpy.local.settings import LocalSettings
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog

PEER = "qmgr"


def serve_connection(agent: LocalAgent, conn: socket.socket,
                     max_frame: int = codec.DEFAULT_MAX_FRAME) -> int:
    """Answer delivery requests on ``conn`` until the peer closes it; the count."""
    served = 0
    conn.settimeout(None)
    while True:
        try:
            request = codec.expect(codec.recv(conn, PEER, max_frame), DeliveryRequest, PEER)
        except EOFError:
            return served
        codec.send(conn, agent.deliver(request))
        served += 1


def handler(ctx: ServerContext, conn: socket.socket) -> None:
    agent = ctx.extra["agent"]
    serve_connection(agent, conn, ctx.extra["max_frame"])


def main() -> None:
    ctx = skeleton.prepare("local")
    try:
        settings = LocalSettings.from_config(ctx.cfg)
        max_frame = ctx.cfg.get_size("ipc_max_frame")
    except ConfigError as exc:
        maillog.fatal(str(exc))
    ctx.extra["agent"] = LocalAgent(settings)
    ctx.extra["max_frame"] = max_frame
    skeleton.run_sync_server(ctx, handler)
