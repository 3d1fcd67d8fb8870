"""What one smtpd restriction decides, and the replies it words.

Shared by the restriction evaluator (:mod:`postpy.smtpd.restrictions`) and
the modules that implement restrictions (:mod:`~postpy.smtpd.access`,
:mod:`~postpy.smtpd.dnsbl`, :mod:`~postpy.smtpd.policy`,
:mod:`~postpy.smtpd.builtin_checks`), so none of them imports another.

A restriction answers an :class:`Outcome`: nothing decided (DUNNO), permit,
reject (with its reply), or one of the two conditional deferrals of
access(5): DEFER_IF_PERMIT and DEFER_IF_REJECT.  Actions on the message
(HOLD, DISCARD, FILTER, REDIRECT, BCC, PREPEND) are collected in
:class:`MessageActions` and reach cleanup with the envelope.

Replies have Postfix's shape ``CODE X.Y.Z <what>: Class rejected: text``,
where ``what`` and ``Class`` name the thing the restriction looked at
(:class:`Subject`): the client (``<name[addr]>: Client host``), the HELO
name, the sender, the recipient, DATA or END-OF-MESSAGE.  An enhanced
status code from a table is adjusted to the subject as access(5) says:
sender and recipient codes (X.1.1-X.1.6 and X.1.7-X.1.8) are swapped for
the other, and become X.0.0 for the client and HELO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postpy.smtpd.replies import Reply

DUNNO, PERMIT, REJECT, DEFER_IF_PERMIT, DEFER_IF_REJECT = (
    "dunno", "permit", "reject", "defer_if_permit", "defer_if_reject")

_DSN = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})$")
_SENDER_DETAIL = {"1": "7", "2": "8", "3": "7", "4": "7", "5": "7", "6": "7"}
_RECIPIENT_DETAIL = {"7": "1", "8": "2"}


@dataclass(frozen=True)
class Subject:
    """What a restriction judged, for its reply: ``<what>: Class rejected``."""

    what: str
    label: str          # "Client host", "Helo command", "Sender address", ...
    kind: str           # "client" | "helo" | "sender" | "recipient" | "data" | "eod"


@dataclass(frozen=True)
class Outcome:
    kind: str = DUNNO
    reply: Reply | None = None
    disconnect: bool = False        # 421/521 from a table: close after the reply

    @property
    def decided(self) -> bool:
        return self.kind in (PERMIT, REJECT)


NOTHING = Outcome()
PERMITTED = Outcome(PERMIT)


@dataclass
class MessageActions:
    """Access-table actions on the whole message, for cleanup."""

    hold: str = ""              # reason ("" none)
    discard: str = ""
    filter: str = ""            # transport:nexthop
    redirect: str = ""
    bcc: list[str] = field(default_factory=list)
    prepend: list[str] = field(default_factory=list)

    def merge(self, other: MessageActions) -> None:
        """Later actions win for the one-value ones, as in Postfix."""
        self.hold = other.hold or self.hold
        self.discard = other.discard or self.discard
        self.filter = other.filter or self.filter
        self.redirect = other.redirect or self.redirect
        self.bcc += [a for a in other.bcc if a not in self.bcc]
        self.prepend += other.prepend

    def __bool__(self) -> bool:
        return bool(self.hold or self.discard or self.filter or self.redirect
                    or self.bcc or self.prepend)


def adjust_dsn(dsn: str, subject: Subject) -> str:
    """An enhanced status code from a table, fitted to the subject (access(5))."""
    m = _DSN.match(dsn)
    if m is None or m.group(2) != "1":
        return dsn
    cls, detail = m.group(1), m.group(3)
    if subject.kind == "sender":
        detail = _SENDER_DETAIL.get(detail, detail)
    elif subject.kind == "recipient":
        detail = _RECIPIENT_DETAIL.get(detail, detail)
    elif subject.kind in ("client", "helo"):
        return f"{cls}.0.0"
    return f"{cls}.1.{detail}"


def split_dsn(text: str) -> tuple[str, str]:
    """``"5.7.2 text"`` -> ("5.7.2", "text"); no code -> ("", text)."""
    word, _, rest = text.strip().partition(" ")
    if _DSN.match(word):
        return word, rest.strip()
    return "", text.strip()


def rejected(code: int, dsn: str, subject: Subject, text: str) -> Reply:
    """``CODE X.Y.Z <what>: Class rejected: text``."""
    return Reply.of(code, f"{dsn} <{subject.what}>: {subject.label} rejected: {text}")


def table_reply(code: int, text: str, subject: Subject, default_text: str = "Access denied") -> Reply:
    """A reply from a table or policy server: ``text`` may start with its own
    enhanced status code; the default is X.7.1 (access(5))."""
    dsn, rest = split_dsn(text)
    cls = str(code)[0]
    dsn = adjust_dsn(dsn, subject) if dsn and dsn[0] == cls else f"{cls}.7.1"
    return rejected(code, dsn, subject, rest or default_text)


def reject(outcome_reply: Reply) -> Outcome:
    return Outcome(REJECT, outcome_reply)
