"""cleanup: check and rewrite the envelope a client sends.

Reads a :class:`postpy.ipc.messages.CleanupEnvelope`; produces the sender,
recipients and attributes that go into the queue file.  No I/O.

- Attribute names must be in :data:`postpy.ipc.messages.CLEANUP_ATTRS`;
  anything else is a protocol error in the client (a bug, answered with a
  temporary failure so nothing is lost).
- Addresses with control characters are refused: they would end up in
  ``Received: ... for <rcpt>`` and in log lines.  smtpd never sends them;
  a hostile maildrop file might.
- ``myorigin`` is appended to unqualified envelope addresses (``root`` →
  ``root@$myorigin``), whatever the origin, as Postfix's trivial-rewrite
  does in its local context; the recipient's original form is kept as
  ``orig`` so delivery logs show ``orig_to=<root>``.  The null sender stays
  null.  With ``append_at_myorigin = no`` cleanup passes an empty
  ``myorigin`` and unqualified addresses stay as they are (they are local).
- Duplicate recipients (the same address and DSN NOTIFY) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postpy.ipc.messages import CLEANUP_ATTRS, CleanupEnvelope, Rcpt
from postpy.queue import qfile

# Attributes that steer cleanup itself and are not stored in the queue file.
PROCESSING_ATTRS = frozenset({"rewrite", "extract", "log_prefix", "overrides",
                              "hold", "discard", "prepend", "milter_edits"})
LOCAL_ORIGINS = frozenset({"pickup", "local", "bounce"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refusal(Exception):
    """cleanup will not queue this message; ``reply`` is ``X.Y.Z text``."""

    def __init__(self, status: str, reply: str) -> None:
        super().__init__(reply)
        self.status = status        # "temp" | "perm"
        self.reply = reply


@dataclass
class CheckedEnvelope:
    sender: str
    recipients: list[qfile.Recipient]
    attrs: dict[str, str]              # everything the client sent
    stored: dict[str, str] = field(default_factory=dict)   # what the queue file keeps

    @property
    def origin(self) -> str:
        return self.attrs.get("origin", "")

    @property
    def local(self) -> bool:
        """Mail from a local program: rewrite in the local context."""
        return self.origin in LOCAL_ORIGINS or self.attrs.get("rewrite") == "yes"

    def flag(self, name: str) -> bool:
        return self.attrs.get(name, "").lower() == "yes"


def qualify(address: str, myorigin: str) -> str:
    """``user`` → ``user@myorigin``; qualified and null addresses unchanged."""
    if not address or "@" in address or not myorigin:
        return address
    return f"{address}@{myorigin}"


def add_recipient(recipients: list[qfile.Recipient], address: str, myorigin: str, *,
                  orig: str = "", orcpt: str = "", notify: str = "") -> bool:
    """Append one recipient after rewriting, unless it is already there."""
    rewritten = qualify(address, myorigin)
    if rewritten != address and not orig:
        orig = address
    for have in recipients:
        if have.address == rewritten and have.notify == notify:
            return False
    recipients.append(qfile.Recipient(rewritten, orig, orcpt, notify))
    return True


def check_envelope(msg: CleanupEnvelope, myorigin: str) -> CheckedEnvelope:
    """Validate and rewrite; raises :class:`Refusal`."""
    unknown = sorted(set(msg.attrs) - CLEANUP_ATTRS)
    if unknown:
        raise Refusal("temp", f"4.3.0 Error: internal protocol error (unknown attribute {unknown[0]})")
    for name, value in msg.attrs.items():
        if _CONTROL.search(value):
            raise Refusal("perm", f"5.5.4 Invalid value of attribute {name}")
    if _CONTROL.search(msg.sender):
        raise Refusal("perm", "5.1.7 Bad sender address syntax")
    recipients: list[qfile.Recipient] = []
    for rcpt in msg.recipients:
        if not isinstance(rcpt, Rcpt) or not rcpt.address:
            raise Refusal("perm", "5.1.3 Bad recipient address syntax")
        if any(_CONTROL.search(f) for f in (rcpt.address, rcpt.orig, rcpt.orcpt, rcpt.notify)):
            raise Refusal("perm", "5.1.3 Bad recipient address syntax")
        add_recipient(recipients, rcpt.address, myorigin,
                      orig=rcpt.orig, orcpt=rcpt.orcpt, notify=rcpt.notify)
    sender = qualify(msg.sender, myorigin)
    stored = {k: v for k, v in msg.attrs.items() if k not in PROCESSING_ATTRS and v}
    return CheckedEnvelope(sender, recipients, dict(msg.attrs), stored)
