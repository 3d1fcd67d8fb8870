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
from postpy.local.deliver import LocalAgent
from postpy.local.settings import LocalSettings
from postpy.server import skeleton
from postpy.server.requests import serve_delivery_requests
from postpy.server.skeleton import ServerContext
from postpy.util import maillog


def handler(ctx: ServerContext, conn: socket.socket) -> None:
    agent = ctx.extra["agent"]
    serve_delivery_requests(agent.deliver, conn, ctx.extra["max_frame"])


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
