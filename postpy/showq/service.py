"""showq(8): list the mail queue for ordinary users, without showing any mail.

master runs it on ``public/showq`` (``showq unix n - n - - showq``), as
mail_owner, in the queue directory: a single_server, one client at a
time, with more processes started by master when clients queue up.

Ordinary users cannot read the queue (its directories are mail_owner's,
mode 0700; maildrop is 1733), so ``postqueue -p``/``-j`` and ``mailq`` ask
showq.  The conversation (:mod:`postpy.ipc.messages`):

1. the client sends :class:`ShowqRequest`;
2. showq asks the kernel who the client is (``SO_PEERCRED``: the uid
   cannot be forged, unlike anything the client could write) and checks
   it against ``authorized_mailq_users`` (root and mail_owner always
   pass);
3. it answers :class:`ShowqReply` (``ok``, ``denied`` with a text, or
   ``error``), and when ``ok`` streams the listing as ``D`` frames of
   ``postqueue -j`` lines (:mod:`postpy.mail.queue_listing`), then ``E``.

Only envelopes are read and sent (sender, pending recipients, sizes,
times, delay reasons): message content never leaves the queue.  The
client formats the text form itself, so arrival times are shown in the
user's time zone, as with Postfix.
"""

from __future__ import annotations

import os
import socket

from postpy.ipc import codec
from postpy.ipc.messages import ShowqReply, ShowqRequest
from postpy.mail import queue_listing
from postpy.mail.authorized import AccessError, login_name, peer_uid, uid_allowed
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog

PEER = "postqueue"
BATCH = 64 * 1024
def authorize(elements: list[str], uid: int) -> ShowqReply:
    """The reply for this client: ok, or denied/error with a text."""
    try:
        allowed = uid_allowed(elements, uid, privileged=(0, os.geteuid()))
    except AccessError as exc:
        maillog.warning(f"authorized_mailq_users: {exc}")
        return ShowqReply("error", f"cannot evaluate authorized_mailq_users: {exc}")
    if allowed:
        return ShowqReply("ok")
    name = login_name(uid) or "unknown"
    maillog.warning(f"uid={uid}: user {name} is not allowed to view the mail queue")
    return ShowqReply("denied", f"User {name}({uid}) is not allowed to view the mail queue")


def stream_listing(conn: socket.socket, queue_directory: str = ".") -> int:
    """Send every entry as JSON lines in D frames, then E; the entry count."""
    batch: list[bytes] = []
    size = count = 0
    for entry in queue_listing.scan(queue_directory):
        line = (queue_listing.to_json(entry) + "\n").encode("utf-8", "surrogateescape")
        batch.append(line)
        size += len(line)
        count += 1
        if size >= BATCH:
            conn.sendall(codec.encode_data(b"".join(batch)))
            batch, size = [], 0
    if batch:
        conn.sendall(codec.encode_data(b"".join(batch)))
    conn.sendall(codec.encode_end())
    return count


def serve(ctx: ServerContext, conn: socket.socket) -> None:
    """One client: identify, authorize, list."""
    conn.settimeout(ctx.cfg.get_time("ipc_timeout"))
    try:
        uid = peer_uid(conn)
        request = codec.expect(codec.recv(conn, PEER, ctx.cfg.get_size("ipc_max_frame")),
                               ShowqRequest, PEER)
        if request.format != "json":
            codec.send(conn, ShowqReply("error", f"unsupported listing format {request.format!r}"))
            return
        reply = authorize(ctx.cfg.get_list("authorized_mailq_users"), uid)
        codec.send(conn, reply)
        if reply.status == "ok":
            stream_listing(conn)
    except (EOFError, codec.IpcError) as exc:
        maillog.warning(f"showq: {exc}")
    except PermissionError as exc:
        maillog.warning(f"showq: cannot read the queue: {exc}")
    except OSError:
        pass    # the client went away (mailq | head): nothing to report


def main() -> None:
    ctx = skeleton.prepare("showq")
    skeleton.run_sync_server(ctx, serve)
