"""pickup(8): moves local submissions from maildrop/ into the queue.

master keeps one pickup process running (``pickup unix n - n 60 1
pickup``): a persistent trigger service on ``public/pickup``.  Each
connection is a wake-up (sendmail sends one after writing a file; master
sends one every 60 seconds); pickup reads the trigger byte, closes, and
scans ``maildrop/``.  It also scans once when it starts, so mail submitted
while the system was down is picked up at start.

It runs as mail_owner, unprivileged, in the queue directory.  The threat
model of the drop box (untrusted local users on one side, the queue on the
other) is in :mod:`postpy.queue.maildrop`; what happens to each file is in
:mod:`postpy.pickup.scan`.  pickup never writes a queue file itself:
cleanup does, and pickup removes the maildrop file only after cleanup
answered that the queue file is durable.
"""

from __future__ import annotations

import socket

from postpy.cleanup import overrides
from postpy.config.maincf import ConfigError
from postpy.pickup.scan import Pickup, PickupSettings
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog


def drain_trigger(conn: socket.socket) -> bytes:
    """Read what the trigger sender wrote (a byte or a few); never block long."""
    conn.settimeout(1.0)
    try:
        return conn.recv(64)
    except OSError:
        return b""


def main() -> None:
    ctx = skeleton.prepare("pickup")
    try:
        words = overrides.parse(ctx.cfg.get("receive_override_options"))
    except ConfigError as exc:
        maillog.fatal(f"pickup: {exc}")
    settings = PickupSettings(timeout=ctx.cfg.get_time("ipc_timeout"),
                              max_frame=ctx.cfg.get_size("ipc_max_frame"),
                              submit_users=tuple(ctx.cfg.get_list("authorized_submit_users")),
                              size_limit=ctx.cfg.get_size("message_size_limit"),
                              myhostname=ctx.cfg.get("myhostname"),
                              mail_name=ctx.cfg.get("mail_name"),
                              bounce_size_limit=ctx.cfg.get_size("bounce_size_limit"),
                              content_filter=ctx.cfg.get("content_filter").strip(),
                              overrides=words)
    pickup = Pickup(settings)
    pickup.scan()

    def handler(_ctx: ServerContext, conn: socket.socket) -> None:
        drain_trigger(conn)
        conn.close()
        pickup.scan()

    skeleton.run_sync_server(ctx, handler, persistent=True)
