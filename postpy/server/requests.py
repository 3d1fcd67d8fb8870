"""Delivery agents' side of qmgr's connections (local, pipe).

qmgr keeps a connection to an agent open and sends one DeliveryRequest at a
time on it; the agent answers each with one DeliveryResult and serves the
connection until qmgr closes it (see :mod:`postpy.qmgr.transport`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRequest, DeliveryResult

PEER = "qmgr"


def serve_delivery_requests(deliver: Callable[[DeliveryRequest], DeliveryResult], conn: socket.socket,
                            max_frame: int = codec.DEFAULT_MAX_FRAME) -> int:
    """Answer delivery requests on ``conn`` until the peer closes it; the count."""
    served = 0
    conn.settimeout(None)
    while True:
        try:
            request = codec.expect(codec.recv(conn, PEER, max_frame), DeliveryRequest, PEER)
        except EOFError:
            return served
        codec.send(conn, deliver(request))
        served += 1
