"""local: hand one mailbox delivery to another transport.

``mailbox_transport`` (every mailbox, after aliases and ``.forward``) and
``fallback_transport`` (recipients without a passwd entry) name a
``transport[:nexthop]``, e.g. ``lmtp:unix:private/dovecot-lmtp``.  As
Postfix's local(8) does (its deliver_pass), local does not queue the mail
again: it sends a :class:`postpy.ipc.messages.DeliveryRequest` for the same
queue file, with the one recipient, to that transport's delivery agent
(``private/<transport>``, a master.cf service) and waits for its
:class:`postpy.ipc.messages.DeliveryResult`::

    qmgr -> local -> lmtp     DeliveryRequest (queue file, recipient index,
                              the address after alias expansion)
    qmgr <- local <- lmtp     RecipientResult (sent / deferred / bounced)

Why this design rather than routing in qmgr: only local knows, after
aliases and ``.forward``, which address reaches a mailbox (and whether the
user exists), and this way that address's outcome is combined with the
recipient's other destinations like any local delivery.  The agent logs its
own delivery line (``relay=`` the mailbox server, ``orig_to=`` the
recipient qmgr asked for) and local does not log it again; the request
carries the expanded address, which the smtp/lmtp agent uses in place of
the queue file's (:mod:`postpy.smtp.message`).  An empty next hop is
local's own (the recipient's domain or ``$myhostname``, from
``local_transport``).  A transport that cannot be reached defers the
recipient with ``4.3.0 mail transport unavailable`` and a warning that
says why (Postfix's words), so mail waits and is never lost.
"""

from __future__ import annotations

import os
import re
import socket

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult, RecipientResult
from postpy.util import maillog

UNAVAILABLE = ("4.3.0", "mail transport unavailable")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_transport(spec: str, default_nexthop: str) -> tuple[str, str]:
    """``transport[:nexthop]`` -> (transport, nexthop or ``default_nexthop``)."""
    transport, _, nexthop = spec.partition(":")
    return transport.strip(), nexthop.strip() or default_nexthop


def hand_over(spec: str, req: DeliveryRequest, rcpt: DeliveryRcpt, *, timeout: float,
              max_frame: int = codec.DEFAULT_MAX_FRAME) -> tuple[RecipientResult, bool]:
    """Deliver ``rcpt`` of ``req``'s message through ``spec``.

    Returns the result and whether the agent produced it (and so logged it);
    on failure to reach the agent, a deferral of local's own."""
    transport, nexthop = split_transport(spec, req.nexthop)
    if not _NAME.match(transport):
        maillog.warning(f"{req.queue_id}: bad transport name in \"{spec}\"")
        return RecipientResult(rcpt.index, "deferred", "4.3.5", "mail system configuration error",
                               "none"), False
    request = DeliveryRequest(queue_id=req.queue_id, queue_name=req.queue_name, sender=req.sender,
                              nexthop=nexthop, recipients=[rcpt], arrival=req.arrival,
                              active_time=req.active_time, dispatch_time=req.dispatch_time,
                              transport=transport)
    path = os.path.join("private", transport)
    peer = f"{transport} agent"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError as exc:
                maillog.warning(f"{req.queue_id}: connect to transport {path}: "
                                f"{exc.strerror or exc}")
                return RecipientResult(rcpt.index, "deferred", *UNAVAILABLE, "none"), False
            codec.send(sock, request)
            reply = codec.expect(codec.recv(sock, peer, max_frame), DeliveryResult, peer)
    except (OSError, EOFError, codec.IpcError) as exc:
        text = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        maillog.warning(f"{req.queue_id}: {peer} ({path}): {text}")
        return RecipientResult(rcpt.index, "deferred", *UNAVAILABLE, "none"), False
    for result in reply.results:
        if result.index == rcpt.index and result.status in ("sent", "deferred", "bounced"):
            return result, True
    maillog.warning(f"{req.queue_id}: {peer} gave no result for <{rcpt.address}>")
    return RecipientResult(rcpt.index, "deferred", "4.3.0", "no result from delivery agent",
                           "none"), False
