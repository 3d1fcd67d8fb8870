"""cleanup: what happens to the primary header block before it is queued.

Input: the header block collected by
:class:`postpy.mail.headers.HeaderBlockReader` and the checked envelope.
Output: the header bytes to write (including the empty line that separates
them from the body) and the Message-ID to log.  No I/O; refusals raise
:class:`postpy.cleanup.envelope.Refusal`.

In order:

1. **Loop check.**  ``Received:`` and ``Delivered-To:`` headers are counted;
   when the message would carry more than ``hopcount_limit`` of them with
   ours added, it is refused with ``5.4.6 Too many hops`` (a mail loop).
2. **Recipient extraction** (``extract=yes``, ``sendmail -t``): the
   addresses in ``To:``, ``Cc:`` and ``Bcc:`` (in ``Resent-To:``,
   ``Resent-Cc:``, ``Resent-Bcc:`` instead when any ``Resent-`` header is
   present) are added to the envelope recipients; ``Bcc:`` and
   ``Resent-Bcc:`` are removed.  No recipient at all is
   ``5.1.3 No recipient addresses found in message header``.
3. **Local rewriting** (mail from pickup, local, bounce, or ``rewrite=yes``):
   bare unqualified addresses in ``From:``, ``To:`` and ``Cc:`` get
   ``@$myorigin`` (only simple forms are touched: ``root``,
   ``root, bob``, ``Name <root>``; anything with quotes, comments or groups
   is left as written rather than risk mangling it).
4. **Missing headers** (pickup or ``rewrite=yes``): ``Message-ID:``
   (``<YYYYMMDDhhmmss.QUEUEID@$myhostname>``, UTC stamp), ``Date:`` and
   ``From:`` (the sender, with ``full_name`` as display name) are appended
   after the existing headers, in that order, as Postfix does.
   ``Resent-`` headers are not completed (Postfix would add
   ``Resent-From:`` etc.; not needed by anything yet).
5. **Received:** is prepended, in Postfix's shape: ``from helo (name
   [addr])`` for SMTP clients, ``by $myhostname ($mail_name, from userid
   UID)`` for local programs; ``for <rcpt>`` only with one recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formataddr, getaddresses

from postpy.cleanup.envelope import CheckedEnvelope, Refusal, add_recipient, qualify
from postpy.mail.headers import (
    Header,
    HeaderBlockReader,
    has,
    message_id_stamp,
    recipient_header_values,
    rfc5322_date,
)

BCC_HEADERS = ("Bcc", "Resent-Bcc")
LOOP_HEADERS = ("Received", "Delivered-To")
QUALIFIED_HEADERS = ("From", "To", "Cc")

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_BARE = re.compile(rf"^({_ATOM})$")
_ANGLE = re.compile(rf"^([^<>]*)<({_ATOM})>$")
_UNSAFE = re.compile(r'["()\\;:\[\]]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class HeaderSettings:
    myhostname: str
    myorigin: str
    mail_name: str = "postpy"
    hopcount_limit: int = 50


@dataclass
class HeaderResult:
    data: bytes              # header block as written, without the separator line
    message_id: str          # for the "message-id=" log line; "" when none


def count_hops(headers: list[Header]) -> int:
    return sum(1 for h in headers if h.is_(*LOOP_HEADERS))


def extract_recipients(headers: list[Header], env: CheckedEnvelope, myorigin: str) -> list[Header]:
    """Add the header recipients to ``env``; return the headers minus Bcc."""
    for _name, address in getaddresses(recipient_header_values(headers)):
        address = address.strip()
        if not address or _CONTROL.search(address) or " " in address:
            continue
        # An address already in the envelope (from the command line, with or
        # without DSN options) is not added a second time.
        if any(r.address.lower() in (address.lower(), qualify(address, myorigin).lower())
               for r in env.recipients):
            continue
        add_recipient(env.recipients, address, myorigin)
    return [h for h in headers if not h.is_(*BCC_HEADERS)]


def qualify_header_value(value: str, myorigin: str) -> str | None:
    """The value with bare local parts qualified, or None when nothing changed."""
    if not value or not myorigin or _UNSAFE.search(value):
        return None
    changed = False
    items = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            return None
        m = _BARE.match(item)
        if m and "@" not in item:
            items.append(f"{item}@{myorigin}")
            changed = True
            continue
        m = _ANGLE.match(item)
        if m and "@" not in m.group(2):
            items.append(f"{m.group(1)}<{m.group(2)}@{myorigin}>")
            changed = True
            continue
        items.append(item)
    return ", ".join(items) if changed else None


def qualify_headers(headers: list[Header], myorigin: str) -> list[Header]:
    out = []
    for h in headers:
        if h.is_(*QUALIFIED_HEADERS) and not h.truncated:
            new = qualify_header_value(h.unfolded(), myorigin)
            if new is not None:
                h = Header(h.name, f"{h.name}: {new}\n".encode("utf-8", "surrogateescape"))
        out.append(h)
    return out


def _display_name(full_name: str) -> str:
    # Bytes that were not UTF-8 cannot be encoded into a header word.
    return full_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()


def missing_headers(headers: list[Header], env: CheckedEnvelope, queue_id: str,
                    settings: HeaderSettings, now: float) -> tuple[list[str], str]:
    """Header lines to append, and the generated Message-ID (or "")."""
    added: list[str] = []
    message_id = ""
    if not has(headers, "Message-ID"):
        message_id = f"<{message_id_stamp(now)}.{queue_id}@{settings.myhostname}>"
        added.append(f"Message-ID: {message_id}")
    if not has(headers, "Date"):
        added.append(f"Date: {rfc5322_date(now)}")
    if not has(headers, "From"):
        address = env.sender or f"MAILER-DAEMON@{settings.myhostname}"
        name = _display_name(env.attrs.get("full_name", ""))
        added.append(f"From: {formataddr((name, address)) if name else address}")
    return added, message_id


def received_header(env: CheckedEnvelope, queue_id: str, settings: HeaderSettings,
                    now: float) -> str:
    """Our trace header (RFC 5321 section 4.4), folded with tabs."""
    date = rfc5322_date(now)
    a = env.attrs
    if env.origin == "smtpd" or a.get("client_addr"):
        addr = a.get("client_addr", "")
        name = a.get("client_name") or "unknown"
        helo = a.get("helo") or name
        lines = [f"Received: from {helo} ({name} [{addr}])"]
        if a.get("tls"):
            lines.append(f"\t(using {a['tls']})")
        lines.append(f"\tby {settings.myhostname} ({settings.mail_name}) with "
                     f"{a.get('protocol') or 'ESMTP'} id {queue_id}")
    else:
        by = f"Received: by {settings.myhostname} ({settings.mail_name}"
        by += f", from userid {a['uid']})" if a.get("uid", "").isdigit() else ")"
        lines = [by, f"\tid {queue_id}"]
    if len(env.recipients) == 1:
        lines.append(f"\tfor <{env.recipients[0].address}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return "\n".join(lines) + "\n"


def process_headers(reader: HeaderBlockReader, env: CheckedEnvelope, queue_id: str,
                    settings: HeaderSettings, now: float) -> HeaderResult:
    """Apply steps 1-5 of the module docstring; may add recipients to ``env``."""
    headers = list(reader.headers)
    if count_hops(headers) >= settings.hopcount_limit:
        raise Refusal("perm", "5.4.6 Too many hops")
    if env.flag("extract"):
        headers = extract_recipients(headers, env, settings.myorigin)
        if not env.recipients:
            raise Refusal("perm", "5.1.3 No recipient addresses found in message header")
    if not env.recipients:
        raise Refusal("perm", "5.5.1 No recipients specified")
    if env.local:
        headers = qualify_headers(headers, settings.myorigin)
    added: list[str] = []
    message_id = ""
    if env.origin == "pickup" or env.flag("rewrite"):
        added, message_id = missing_headers(headers, env, queue_id, settings, now)
    if not message_id:
        for h in headers:
            if h.is_("Message-ID"):
                message_id = h.unfolded()
                break
    parts = [received_header(env, queue_id, settings, now).encode("utf-8", "surrogateescape")]
    parts.extend(h.raw for h in headers)
    parts.extend(f"{line}\n".encode("utf-8", "surrogateescape") for line in added)
    return HeaderResult(b"".join(parts), message_id)
