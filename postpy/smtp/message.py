"""One message as the smtp client sends it, built from its queue file.

The delivery agent never trusts qmgr for content (DESIGN.md): it re-reads
the envelope from ``<queue_name>/<queue_id>`` and takes each requested
recipient's DSN parameters from the file, by index.  The address is the
request's: qmgr sends the file's own, and local's ``mailbox_transport``
sends the address after alias expansion (:mod:`postpy.local.handoff`, as
Postfix's local does); an empty one means the file's.  The content is
streamed from the file when sent (:class:`OutMessage.chunks`).

8-bit and SMTPUTF8 facts come from the queue file attributes cleanup wrote
(``body``, ``smtputf8``); when the submitter did not declare a body type,
the content is scanned once (:func:`postpy.smtp.encode.scan`).  SMTPUTF8 is
*required* when an envelope address is non-ASCII, or the submitter asked
for it and the header section really has non-ASCII text (RFC 6531 section
3.2; a message that only asked for it is still sent to an older server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postpy.ipc.messages import DeliveryRequest
from postpy.queue import qfile
from postpy.smtp.encode import scan


@dataclass
class OutRcpt:
    address: str
    notify: str = ""
    orcpt: str = ""             # stored form "addr-type;address"
    index: int = 0              # position in the queue file
    orig: str = ""


@dataclass
class OutMessage:
    """What one transaction sends; ``chunks`` gives the stored content anew each call."""

    sender: str
    recipients: list[OutRcpt]
    size: int
    chunks: Callable[[], Iterable[bytes]]
    eightbit: bool = False
    smtputf8: bool = False        # the submitter asked for SMTPUTF8
    needs_smtputf8: bool = False  # non-ASCII envelope or headers: SMTPUTF8 is required
    envid: str = ""
    ret: str = ""


@dataclass
class Outcome:
    status: str                 # sent | deferred | bounced
    dsn: str
    text: str


class BadRequest(Exception):
    """A requested recipient index the queue file does not have."""


def load_message(path: str, request: DeliveryRequest) -> OutMessage:
    """Raises FileNotFoundError, qfile.CorruptQueueFile or BadRequest."""
    env = qfile.read_envelope(path)
    recipients: list[OutRcpt] = []
    for want in request.recipients:
        if not 0 <= want.index < len(env.recipients):
            raise BadRequest(f"recipient index {want.index} not in queue file {request.queue_id}")
        stored = env.recipients[want.index]
        orcpt = stored.orcpt
        if not orcpt and stored.orig and stored.orig != stored.address:
            orcpt = f"rfc822;{stored.orig}"      # Postfix also tells the original form
        recipients.append(OutRcpt(want.address or stored.address, stored.notify, orcpt, want.index,
                                  stored.orig))

    def chunks() -> Iterable[bytes]:
        return qfile.read_content(path, env)

    attrs = env.attrs
    body = attrs.get("body", "").upper()
    asked_utf8 = attrs.get("smtputf8", "") == "yes"
    envelope_ascii = env.sender.isascii() and all(r.address.isascii() for r in recipients)
    eightbit = body in ("8BITMIME", "BINARYMIME")
    header_utf8 = False
    if (not body or (asked_utf8 and envelope_ascii)) and env.content_length:
        found = scan(chunks())
        eightbit = eightbit or (not body and found.eightbit)
        header_utf8 = found.header_utf8
    return OutMessage(
        sender=env.sender, recipients=recipients, size=env.content_length, chunks=chunks,
        eightbit=eightbit, smtputf8=asked_utf8,
        needs_smtputf8=not envelope_ascii or (asked_utf8 and header_utf8),
        envid=attrs.get("envid", ""), ret=attrs.get("ret", ""))
