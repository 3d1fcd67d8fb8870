"""cleanup: every address mapping of one message, in Postfix's order.

cleanup's session calls three hooks; each does nothing when no table is
configured, or when the receiving service turned mappings off with
``receive_override_options = no_address_mappings`` (the ``overrides``
envelope attribute, :class:`postpy.cleanup.overrides.Overrides`):

:meth:`AddressMapping.map_sender`
    the envelope sender, after it was qualified: canonical mapping
    (:mod:`postpy.cleanup.canonical`, class ``envelope_sender``), then
    masquerading (:mod:`postpy.cleanup.masquerade`).
:meth:`AddressMapping.map_headers`
    the sender headers (From, Sender, Reply-To, Errors-To,
    Return-Receipt-To and their Resent- forms: class ``header_sender``)
    and recipient headers (To, Cc, Bcc, Apparently-To, Resent-To/Cc/Bcc:
    ``header_recipient``), in place, after cleanup qualified them
    (:mod:`postpy.cleanup.headers`).  Like that qualification, only for
    mail rewritten in the local context: Postfix 2.2 and later leave the
    headers of remote clients alone.  A header that is not an address
    list stays as written.
:meth:`AddressMapping.map_recipients`
    every envelope recipient, once the header is read (so ``sendmail -t``
    recipients are included): canonical mapping (``envelope_recipient``),
    masquerading (only when ``masquerade_classes`` has
    ``envelope_recipient``), then virtual alias expansion
    (:mod:`postpy.cleanup.virtual_alias`).  A recipient that changes keeps
    its first form as ``orig`` (``orig_to=`` in delivery logs) and its DSN
    options; duplicates (same address and NOTIFY) are dropped.

A lookup table that fails refuses the message for now
(``4.3.0 Temporary lookup failure``: an SMTP client retries, pickup
leaves the file in maildrop); virtual alias loops and limits are
described in :mod:`postpy.cleanup.virtual_alias`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.cleanup.canonical import (
    ENVELOPE_RECIPIENT,
    ENVELOPE_SENDER,
    HEADER_RECIPIENT,
    HEADER_SENDER,
    Canonical,
)
from postpy.cleanup.envelope import CheckedEnvelope, Refusal
from postpy.cleanup.masquerade import Masquerade
from postpy.cleanup.overrides import Overrides
from postpy.cleanup.virtual_alias import LOOKUP_ERROR, VirtualAlias
from postpy.config.maincf import Config
from postpy.mail.addrlist import AddressError, Mailbox, replace_addresses
from postpy.mail.headers import Header
from postpy.queue import qfile
from postpy.tables.maps import TableError
from postpy.util import maillog

# Postfix's header_opts: which headers hold sender and recipient addresses.
SENDER_HEADERS = ("From", "Sender", "Reply-To", "Errors-To", "Return-Receipt-To",
                  "Resent-From", "Resent-Sender", "Resent-Reply-To")
RECIPIENT_HEADERS = ("To", "Cc", "Bcc", "Apparently-To", "Resent-To", "Resent-Cc", "Resent-Bcc")


@dataclass
class AddressMapping:
    canonical: Canonical = field(default_factory=Canonical)
    masquerade: Masquerade = field(default_factory=Masquerade)
    virtual: VirtualAlias = field(default_factory=VirtualAlias)

    @classmethod
    def from_config(cls, cfg: Config) -> AddressMapping:
        return cls(Canonical.from_config(cfg), Masquerade.from_config(cfg),
                   VirtualAlias.from_config(cfg))

    def active(self, env: CheckedEnvelope) -> bool:
        """Is there anything to do for this message?"""
        return bool(self.canonical or self.masquerade or self.virtual) and \
            Overrides.from_attrs(env.attrs).address_mappings

    def rewrite(self, address: str, address_class: str, queue_id: str = "") -> str:
        """Canonical mapping then masquerading of one address."""
        try:
            address = self.canonical.rewrite(address, address_class)
            return self.masquerade.rewrite(address, address_class)
        except TableError as exc:
            maillog.warning(f"{queue_id}: address mapping lookup problem for {address}: {exc}"
                            " -- message not accepted, try again later")
            raise Refusal("temp", LOOKUP_ERROR) from None

    # -- the hooks ------------------------------------------------------------------
    def map_sender(self, env: CheckedEnvelope, queue_id: str = "") -> None:
        if env.sender and self.active(env):
            env.sender = self.rewrite(env.sender, ENVELOPE_SENDER, queue_id)

    def map_headers(self, headers: list[Header], env: CheckedEnvelope,
                    queue_id: str = "") -> list[Header]:
        if not self.active(env):
            return headers
        out: list[Header] = []
        for header in headers:
            if header.is_(*SENDER_HEADERS):
                header = self._map_header(header, HEADER_SENDER, queue_id)
            elif header.is_(*RECIPIENT_HEADERS):
                header = self._map_header(header, HEADER_RECIPIENT, queue_id)
            out.append(header)
        return out

    def map_recipients(self, env: CheckedEnvelope, queue_id: str = "") -> None:
        if not self.active(env):
            return
        mapped: list[qfile.Recipient] = []
        have: set[tuple[str, str]] = set()
        for rcpt in env.recipients:
            address = self.rewrite(rcpt.address, ENVELOPE_RECIPIENT, queue_id)
            for final in self.virtual.expand(address, queue_id):
                if (final, rcpt.notify) in have:
                    continue
                have.add((final, rcpt.notify))
                orig = rcpt.orig or (rcpt.address if final != rcpt.address else "")
                mapped.append(qfile.Recipient(final, orig, rcpt.orcpt, rcpt.notify))
        env.recipients[:] = mapped

    # -- headers --------------------------------------------------------------------
    def _map_header(self, header: Header, address_class: str, queue_id: str) -> Header:
        if header.truncated:
            return header

        def rewrite(mailbox: Mailbox) -> str:
            return self.rewrite(mailbox.address, address_class, queue_id)

        name, colon, value = header.raw.partition(b":")
        try:
            new = replace_addresses(value.decode("utf-8", "surrogateescape"), rewrite)
        except AddressError:
            return header
        if new is None:
            return header
        return Header(header.name, name + colon + new.encode("utf-8", "surrogateescape"))
