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
   ``5.1.3 No recipient addresses found in message header``; a recipient
   header that cannot be parsed (:mod:`postpy.mail.addrlist`) or was cut
   at header_size_limit is ``5.1.3 Bad recipient address syntax in header
   NAME`` (a recipient is never dropped silently).
3. **Local rewriting** (mail from pickup, local, bounce, or ``rewrite=yes``,
   which smtpd sets for clients in ``local_header_rewrite_clients``):
   unqualified addresses in the sender and recipient headers
   (:data:`QUALIFIED_HEADERS`) get ``@$myorigin`` when
   ``append_at_myorigin`` is on, in place: ``From: root (Cron Daemon)``
   becomes ``From: root@$myorigin (Cron Daemon)``; display names,
   comments, groups and folding stay as written.  A header that is not an
   address list is left as it is.  Then canonical mapping and masquerading
   of these headers (:mod:`postpy.cleanup.address_mapping`).
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

from dataclasses import dataclass
from email.utils import formataddr

from postpy.cleanup.address_mapping import AddressMapping
from postpy.cleanup.envelope import CheckedEnvelope, Refusal, add_recipient, qualify
from postpy.mail.addrlist import AddressError, parse_address_list, qualify_address_list
from postpy.mail.headers import (
    Header,
    HeaderBlockReader,
    has,
    message_id_stamp,
    recipient_headers,
    rfc5322_date,
)

BCC_HEADERS = ("Bcc", "Resent-Bcc")
LOOP_HEADERS = ("Received", "Delivered-To")
# Headers whose addresses are qualified in the local context (as Postfix's
# cleanup does for its sender and recipient headers).
QUALIFIED_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Apparently-To",
                     "Errors-To", "Return-Receipt-To", "Resent-From", "Resent-Sender",
                     "Resent-Reply-To", "Resent-To", "Resent-Cc", "Resent-Bcc")


@dataclass
class HeaderSettings:
    myhostname: str
    myorigin: str            # appended to unqualified addresses ("" with append_at_myorigin = no)
    mail_name: str = "postpy"
    hopcount_limit: int = 50


@dataclass
class HeaderResult:
    data: bytes              # header block as written, without the separator line
    message_id: str          # for the "message-id=" log line; "" when none


def count_hops(headers: list[Header]) -> int:
    return sum(1 for h in headers if h.is_(*LOOP_HEADERS))


def extract_recipients(headers: list[Header], env: CheckedEnvelope, myorigin: str) -> list[Header]:
    """Add the header recipients to ``env``; return the headers minus Bcc.

    A recipient header that cannot be parsed refuses the message (a
    recipient must never be lost silently).
    """
    for header in recipient_headers(headers):
        if header.truncated:
            raise Refusal("perm", f"5.1.3 Recipient header {header.name} exceeds header_size_limit")
        try:
            mailboxes = parse_address_list(header.value.decode("utf-8", "surrogateescape"))
        except AddressError:
            raise Refusal("perm", f"5.1.3 Bad recipient address syntax in header {header.name}") from None
        for mailbox in mailboxes:
            address = mailbox.address
            # An address already in the envelope (from the command line, with or
            # without DSN options) is not added a second time.
            if any(r.address.lower() in (address.lower(), qualify(address, myorigin).lower())
                   for r in env.recipients):
                continue
            add_recipient(env.recipients, address, myorigin)
    return [h for h in headers if not h.is_(*BCC_HEADERS)]


def qualify_header(header: Header, myorigin: str) -> Header:
    """The header with ``@myorigin`` after each unqualified address; the
    header unchanged when there is none, or when it is not an address list
    (it is then left as written, not mangled)."""
    if header.truncated or not myorigin:
        return header
    name, colon, value = header.raw.partition(b":")
    try:
        new = qualify_address_list(value.decode("utf-8", "surrogateescape"), myorigin)
    except AddressError:
        return header
    if new is None:
        return header
    return Header(header.name, name + colon + new.encode("utf-8", "surrogateescape"))


def qualify_headers(headers: list[Header], myorigin: str) -> list[Header]:
    return [qualify_header(h, myorigin) if h.is_(*QUALIFIED_HEADERS) else h for h in headers]


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
                    settings: HeaderSettings, now: float,
                    mapping: AddressMapping | None = None) -> HeaderResult:
    """Apply steps 1-5 of the module docstring; may add recipients to ``env``.
    ``mapping``: canonical mapping and masquerading of the qualified headers."""
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
        if mapping is not None:
            headers = mapping.map_headers(headers, env, queue_id)
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
