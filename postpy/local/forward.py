"""local: forward a message to addresses found in aliases or ``.forward``.

Forwarding is a resubmission, as in Postfix: the addresses an expansion
produced that are not local become the recipients of ONE new message,
handed to cleanup (``private/cleanup``, :class:`postpy.cleanup.client.CleanupClient`)
with ``origin=local``.  Its content is the original message with
``Delivered-To: <recipient>`` prepended (per ``prepend_delivered_header``,
which includes ``forward`` by default), so a message that comes back here
is recognised as a loop; its sender is the original sender, or
``owner-NAME@$myorigin`` when the alias has an owner.  DSN parameters carry
over: NOTIFY, ENVID, RET, and an ORCPT naming the original recipient (so a
later bounce says which address the sender used).

The new message's queue ID is the delivery's status text: ``forwarded as
ID``.  A temporary failure of cleanup (unreachable, ``temp``) is ``4.3.0``;
a refusal keeps cleanup's status (``5.x.x``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postpy.cleanup.client import CleanupClient, CleanupUnavailable
from postpy.ipc.messages import Rcpt
from postpy.local.message import Message, trace_headers
from postpy.local.outcome import DeliveryError

# Envelope attributes that travel with a forwarded copy.
CARRIED_ATTRS = ("envid", "ret", "body", "smtputf8")

# submit(sender, recipients, attrs, content) -> new queue ID; raises DeliveryError
Submit = Callable[[str, list[Rcpt], dict[str, str], bytes], str]

_STATUS = re.compile(r"^([245]\.[0-9]{1,3}\.[0-9]{1,3})\s*(.*)$", re.S)


def cleanup_submitter(path: str = "private/cleanup", timeout: float = 3600.0) -> Submit:
    """A :data:`Submit` that talks to cleanup over ``path`` (queue-relative)."""

    def submit(sender: str, recipients: list[Rcpt], attrs: dict[str, str], content: bytes) -> str:
        try:
            with CleanupClient(path, timeout) as client:
                result = client.submit(sender, recipients, attrs, [content])
        except CleanupUnavailable as exc:
            raise DeliveryError("4.3.0", f"cannot forward: {exc}") from None
        if result.status == "ok":
            return result.queue_id
        m = _STATUS.match(result.reply)
        dsn, text = (m.group(1), m.group(2)) if m else ("", result.reply)
        text = f"cannot forward: {text or result.status}"
        if result.status == "perm" and dsn.startswith("5"):
            raise DeliveryError(dsn, text)
        raise DeliveryError(dsn if dsn.startswith("4") else "4.3.0", text)

    return submit


def forward(msg: Message, addresses: list[str], sender: str, delivered_to: str | None, *,
            notify: str, orcpt: str, submit: Submit) -> str:
    """Resubmit ``msg`` to ``addresses``; the new queue ID (raises DeliveryError)."""
    recipients = [Rcpt(address, "", orcpt, notify) for address in addresses]
    attrs = {"origin": "local"}
    attrs.update({name: msg.attrs[name] for name in CARRIED_ATTRS if msg.attrs.get(name)})
    content = trace_headers(None, delivered_to) + msg.content
    return submit(sender, recipients, attrs, content)
