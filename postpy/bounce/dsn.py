"""bounce: compose a delivery status notification (RFC 3464), as pure functions.

Input: a :class:`Report` (what happened to which recipients of which
message, plus the part of the original to return).  Output: the notice's
header and body as bytes with LF line ends, ready to stream to cleanup.
No I/O, no clock, no randomness: the same report always gives the same
bytes (the MIME boundary is made from the notice's queue ID and time).

Shape of a notice (RFC 3462/6522 multipart/report, RFC 3464 fields)::

    From: MAILER-DAEMON@$myhostname (Mail Delivery System)
    To: <the original sender, or the postmaster>
    Subject: Undelivered Mail Returned to Sender     (see texts.SUBJECTS)
    Auto-Submitted: auto-replied                      RFC 3834
    Message-ID, Date, MIME-Version
    Content-Type: multipart/report; report-type=delivery-status; boundary=...

    part 1  text/plain             the explanation (postpy.bounce.texts)
    part 2  message/delivery-status
              per-message fields:  Reporting-MTA: dns; $myhostname
                                   X-Postpy-Queue-ID, X-Postpy-Sender,
                                   Arrival-Date, Original-Envelope-Id (ENVID)
              one block per recipient: Final-Recipient, Original-Recipient
                                   (ORCPT), Action, Status, Remote-MTA,
                                   Diagnostic-Code, Last-Attempt-Date,
                                   Will-Retry-Until (delay notices)
    part 3  message/rfc822         the original, when RET allows and it fits
            text/rfc822-headers    otherwise its header block only

Choices, where RFC 3464 leaves room or Postfix is not the model:

- The parts are assembled by hand rather than with the ``email`` package's
  generator: the generator would re-serialise the returned message
  (refolding headers, re-encoding 8-bit text), and a notice must return the
  original bytes as they were.  Tests parse every notice back with
  ``email`` to check the structure.
- Returned content (RET, RFC 3461 section 4.3): ``RET=HDRS`` returns the
  header block only, ``RET=FULL`` the whole message.  Without RET, failure
  notices return the whole message and delay/success notices only the
  header block (the sender has the message; the notice is about its
  progress).  A message larger than ``bounce_size_limit`` is returned as
  its header block only, itself cut at a line boundary at the limit
  (0 means no limit).  The whole message is never cut in the middle: a
  truncated MIME body would no longer parse.
- ``Status`` keeps the detail of the recorded code but its class follows
  the action (RFC 3464 section 2.3.4): an expired message whose last
  attempt said ``4.4.1`` is reported ``failed`` with ``5.4.1``.
- ``Diagnostic-Code``: a reply from a remote server, recorded by the smtp
  client (:mod:`postpy.smtp.client`) as ``host NAME[ADDR] said: REPLY (in
  reply to ...)`` or ``host NAME[ADDR] refused to talk to me: REPLY``, becomes
  ``Remote-MTA: dns; NAME`` and ``Diagnostic-Code: smtp; REPLY``; any other
  text that starts with an SMTP reply code is ``smtp;``; everything else
  (local delivery, pipes, qmgr) is ``x-unix;``.
- Addresses that are not ASCII are reported with the ``utf-8`` address
  type in a ``message/global-delivery-status`` part (RFC 6533).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from postpy.bounce import texts
from postpy.mail.headers import message_id_stamp, rfc5322_date

ACTIONS = {texts.FAILURE: "failed", texts.POSTMASTER: "failed", texts.DELAY: "delayed"}
STATUS_CLASS = {texts.FAILURE: "5", texts.POSTMASTER: "5", texts.DELAY: "4", texts.SUCCESS: "2"}
SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")
NO_REASON = "no reason was recorded"
FOLD_WIDTH = 78
TOKEN_LIMIT = 900               # keeps every line under RFC 5322's 998
DIAGNOSTIC_LIMIT = 4000

_STATUS = re.compile(r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}$")
_REMOTE = re.compile(r"^host ([^\s\[\]]+)\[[^\]]*\](?::[0-9]+)? (?:said|refused to talk to me): "
                     r"([1-5][0-9][0-9](?:[ -].*?)?)(?: \((?:in|unexpected) reply to [^()]*\))?$",
                     re.DOTALL)
_SMTP_REPLY = re.compile(r"^[245][0-9][0-9](?:[ -]|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass
class ReportedRecipient:
    address: str
    action: str = ""            # the L record's action ("" when none was recorded)
    status: str = ""            # the L record's X.Y.Z
    text: str = ""              # the L record's reason
    orig: str = ""              # the address as first received, when it differs
    orcpt: str = ""             # DSN ORCPT, "type;address"


@dataclass
class Returned:
    """The part of the original message that goes back with the notice."""

    data: bytes                 # LF line ends, ends with LF (or is empty)
    whole: bool                 # True: message/rfc822; False: text/rfc822-headers


@dataclass
class Report:
    kind: str                   # texts.FAILURE | DELAY | SUCCESS | POSTMASTER
    queue_id: str               # the original message
    notice_id: str              # the notice's own queue ID (from cleanup)
    sender: str                 # the original envelope sender ("" for <>)
    to: str                     # who gets the notice
    myhostname: str
    arrival: float              # the original's arrival time
    now: float                  # when the notice is written
    recipients: list[ReportedRecipient]
    returned: Returned
    mail_name: str = "postpy"
    envid: str = ""             # DSN ENVID of the original
    last_attempt: float = 0.0   # 0: same as now
    will_retry_until: float = 0.0   # delay notices: when the message expires
    extra_headers: list[str] = field(default_factory=list)


# -- decisions ------------------------------------------------------------------

def wants_notice(kind: str, notify: str) -> bool:
    """Does a recipient with this DSN NOTIFY value ask for this kind of notice?

    RFC 3461 section 4.1: NEVER asks for none; an empty value is the
    default (failure and delay notices); otherwise the listed kinds only.
    """
    words = {w.strip().upper() for w in notify.split(",") if w.strip()}
    if "NEVER" in words:
        return False
    if kind == texts.SUCCESS:
        return "SUCCESS" in words
    wanted = "DELAY" if kind == texts.DELAY else "FAILURE"
    return not words or wanted in words


def header_block(content: bytes) -> bytes:
    """The header lines of a message, without the empty separator line."""
    if content.startswith(b"\n"):
        return b""
    end = content.find(b"\n\n")
    return content if end < 0 else content[:end + 1]


def cut_at_line(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of ``data``, ending at a line end when there is one."""
    if not limit or len(data) <= limit:
        return data
    cut = data.rfind(b"\n", 0, limit)
    return data[:cut + 1] if cut >= 0 else data[:limit] + b"\n"


def returned_content(prefix: bytes, total: int, *, kind: str, ret: str, limit: int) -> Returned:
    """Decide what to return, from the first bytes of the content.

    ``prefix`` must hold at least ``limit + 1`` bytes of the content (all of
    it when ``limit`` is 0 or the content is shorter); ``total`` is the
    content's full length.
    """
    ret = ret.upper()
    whole = ret == "FULL" or (ret != "HDRS" and kind in (texts.FAILURE, texts.POSTMASTER))
    if whole and (not limit or total <= limit) and len(prefix) >= total:
        data = prefix[:total]
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return Returned(data, True)
    return Returned(cut_at_line(header_block(prefix), limit), False)


def reported_status(kind: str, recorded: str) -> str:
    """The Status field: the recorded code with the class the action implies."""
    cls = STATUS_CLASS[kind]
    if _STATUS.match(recorded):
        return cls + recorded[1:]
    return f"{cls}.0.0"


def reported_action(kind: str, recorded: str) -> str:
    if kind == texts.SUCCESS:
        return recorded if recorded in SUCCESS_ACTIONS else "delivered"
    return ACTIONS[kind]


def diagnostic(text: str) -> tuple[str, str, str]:
    """(remote MTA name or "", diagnostic type, diagnostic text) of a reason."""
    text = clean(text)
    m = _REMOTE.match(text)
    if m:
        return m.group(1), "smtp", m.group(2)
    if _SMTP_REPLY.match(text):
        return "", "smtp", text
    return "", "x-unix", text


# -- formatting helpers ----------------------------------------------------------

def clean(text: str) -> str:
    """One line of text: control characters (CR, LF, TAB, ...) become a space."""
    return _CONTROL.sub(" ", text).strip()


def fold(name: str, value: str, width: int = FOLD_WIDTH) -> list[str]:
    """``Name: value`` folded at spaces (RFC 5322 section 2.2.3) into lines."""
    tokens: list[str] = []
    for token in value.split(" "):
        while len(token) > TOKEN_LIMIT:
            tokens.append(token[:TOKEN_LIMIT])
            token = token[TOKEN_LIMIT:]
        tokens.append(token)
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > width and line.strip() and line != f"{name}:":
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return lines


def _is_ascii(text: str) -> bool:
    return text.isascii()


def address_field(name: str, address: str, utf8: bool) -> str:
    kind = "utf-8" if utf8 else "rfc822"
    return f"{name}: {kind}; {address}" if address else f"{name}: {kind};"


def orcpt_field(orcpt: str) -> str:
    kind, sep, address = orcpt.partition(";")
    if not sep:
        kind, address = "rfc822", orcpt
    return f"Original-Recipient: {kind.strip() or 'rfc822'}; {address.strip()}"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")


# -- the parts ------------------------------------------------------------------

def human_part(report: Report) -> str:
    lines = []
    for rcpt in report.recipients:
        orig = rcpt.orig if rcpt.orig != rcpt.address else ""
        line = texts.recipient_line(clean(rcpt.address), clean(orig), clean(rcpt.text) or NO_REASON)
        lines.append(textwrap.fill(line, width=76, subsequent_indent="    ",
                                   break_on_hyphens=False))
    until = rfc5322_date(report.will_retry_until) if report.will_retry_until else "it expires"
    return texts.human_text(report.kind, host=report.myhostname, mail_name=report.mail_name,
                            whole_message=report.returned.whole, age=report.now - report.arrival,
                            until=until, lines=lines)


def status_part(report: Report) -> tuple[str, bool]:
    """The message/delivery-status body and whether it needs RFC 6533."""
    utf8 = not all(_is_ascii(r.address) for r in report.recipients) or not _is_ascii(report.sender)
    out = [f"Reporting-MTA: dns; {report.myhostname}",
           f"X-Postpy-Queue-ID: {report.queue_id}",
           address_field("X-Postpy-Sender", clean(report.sender), utf8 and not _is_ascii(report.sender)),
           f"Arrival-Date: {rfc5322_date(report.arrival)}"]
    if report.envid:
        out.append(f"Original-Envelope-Id: {clean(report.envid)}")
    last_attempt = rfc5322_date(report.last_attempt or report.now)
    for rcpt in report.recipients:
        out.append("")
        out.append(address_field("Final-Recipient", clean(rcpt.address), not _is_ascii(rcpt.address)))
        if rcpt.orcpt:
            out.append(orcpt_field(clean(rcpt.orcpt)))
        out.append(f"Action: {reported_action(report.kind, rcpt.action)}")
        out.append(f"Status: {reported_status(report.kind, rcpt.status)}")
        remote, dtype, dtext = diagnostic(rcpt.text[:DIAGNOSTIC_LIMIT] or NO_REASON)
        if remote:
            out.append(f"Remote-MTA: dns; {remote}")
        out.extend(fold("Diagnostic-Code", f"{dtype}; {dtext}"))
        out.append(f"Last-Attempt-Date: {last_attempt}")
        if report.kind == texts.DELAY and report.will_retry_until:
            out.append(f"Will-Retry-Until: {rfc5322_date(report.will_retry_until)}")
    return "\n".join(out) + "\n", utf8


def boundary_for(report: Report, *parts: bytes) -> str:
    """A boundary that none of the parts contains (RFC 2046 section 5.1.1)."""
    base = f"{report.notice_id}.{int(report.now)}/{report.myhostname}"[:60]
    boundary, n = base, 0
    while any(f"--{boundary}".encode() in part for part in parts):
        n += 1
        boundary = f"{base}.{n}"
    return boundary


def compose(report: Report) -> bytes:
    """The whole notice, header and body, LF line ends."""
    text = human_part(report)
    status, utf8 = status_part(report)
    text_bytes, status_bytes = _encode(text), _encode(status)
    returned = report.returned
    returned_8bit = any(b >= 0x80 for b in returned.data)
    boundary = boundary_for(report, text_bytes, status_bytes, returned.data)
    eight_bit = returned_8bit or not text.isascii() or not status.isascii()
    headers = [
        f"From: MAILER-DAEMON@{report.myhostname} (Mail Delivery System)",
        f"Subject: {texts.SUBJECTS[report.kind]}",
        f"To: {clean(report.to)}",
        "Auto-Submitted: auto-replied",
        f"Message-ID: <{message_id_stamp(report.now)}.{report.notice_id}@{report.myhostname}>",
        f"Date: {rfc5322_date(report.now)}",
        *report.extra_headers,
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
    ]
    out = [_encode("\n".join(headers) + "\n\n"),
           b"This is a MIME-encapsulated message.\n\n"]

    def part(description: str, ctype: str, body: bytes, eight: bool) -> None:
        head = [f"--{boundary}", f"Content-Description: {description}", f"Content-Type: {ctype}"]
        if eight:
            head.append("Content-Transfer-Encoding: 8bit")
        out.append(_encode("\n".join(head) + "\n\n"))
        out.append(body)
        out.append(b"\n")

    charset = "us-ascii" if text.isascii() else "utf-8"
    part("Notification", f"text/plain; charset={charset}", text_bytes, not text.isascii())
    part("Delivery report", "message/global-delivery-status" if utf8 else "message/delivery-status",
         status_bytes, not status.isascii())
    description = texts.RETURNED_DESCRIPTION[(report.kind, returned.whole)]
    part(description, "message/rfc822" if returned.whole else "text/rfc822-headers",
         returned.data, returned_8bit)
    out.append(f"--{boundary}--\n".encode())
    return b"".join(out)
