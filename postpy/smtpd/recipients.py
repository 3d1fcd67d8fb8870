"""smtpd: recipient tables of non-local domains, and relocated users, at RCPT.

Part of ``smtpd_reject_unlisted_recipient`` (and the
``reject_unlisted_recipient`` restriction), next to the local check of
:meth:`postpy.smtpd.relay.RelayPolicy.unlisted`, so the system never
accepts mail it can only bounce.  In Postfix's order:

1. ``relocated_maps`` (any domain, :mod:`postpy.mail.relocated`):
   ``550 5.1.6 <addr>: Recipient address rejected: User has moved to NEWADDR``.
2. A domain in ``virtual_mailbox_domains`` (and not local) whose
   recipient is not in ``virtual_mailbox_maps``:
   ``550 5.1.1 <addr>: Recipient address rejected: User unknown in virtual
   mailbox table``.  An empty ``virtual_mailbox_maps`` accepts everyone.
3. A domain in ``relay_domains`` (neither local nor virtual) whose
   recipient is not in ``relay_recipient_maps``, when that is set:
   ``550 5.1.1 ... User unknown in relay recipient table``.

Address keys as in Postfix (:mod:`postpy.tables.addrfind`):
``user+ext@domain``, ``user@domain``, (``user`` for this host's own
domains), then ``@domain``; domain lists as
:mod:`postpy.tables.domain_list` reads them.  A table that
cannot be read answers ``451 4.3.0 <addr>: Temporary lookup failure``.
``sendmail -bv`` asks :meth:`RecipientTables.unknown` the same question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.config.maincf import Config
from postpy.mail import relocated
from postpy.smtpd import replies
from postpy.smtpd.replies import Reply
from postpy.tables.addrfind import find_address
from postpy.tables.domain_list import DomainList
from postpy.tables.maps import TableError

VIRTUAL_TABLE = "virtual mailbox table"
RELAY_TABLE = "relay recipient table"


def _never(domain: str) -> bool:
    return False


@dataclass(frozen=True)
class RecipientTables:
    virtual_mailbox_domains: tuple[str, ...] = ()
    virtual_mailbox_maps: tuple[str, ...] = ()
    relay_recipient_maps: tuple[str, ...] = ()
    relocated_maps: tuple[str, ...] = ()
    recipient_delimiter: str = ""
    is_local: Callable[[str], bool] = field(default=_never)   # own domain: "user" keys count

    @classmethod
    def from_config(cls, cfg: Config) -> RecipientTables:
        from postpy.tables.address_map import local_domain_test

        return cls(
            virtual_mailbox_domains=tuple(cfg.get_list("virtual_mailbox_domains")),
            virtual_mailbox_maps=tuple(cfg.get_list("virtual_mailbox_maps")),
            relay_recipient_maps=tuple(cfg.get_list("relay_recipient_maps")),
            relocated_maps=tuple(cfg.get_list("relocated_maps")),
            recipient_delimiter=cfg.get("recipient_delimiter"),
            is_local=local_domain_test(cfg),
        )

    def _known(self, maps: tuple[str, ...], address: str) -> bool:
        return find_address(maps, address, self.recipient_delimiter, self.is_local) is not None

    def is_virtual_mailbox_domain(self, domain: str) -> bool:
        """Is ``domain`` in ``virtual_mailbox_domains``?  Raises TableError."""
        if not self.virtual_mailbox_domains or not domain:
            return False
        return DomainList.parse(list(self.virtual_mailbox_domains)).matches(domain)

    def moved(self, address: str) -> str | None:
        """The relocated user's new location, or None.  Raises TableError."""
        if not self.relocated_maps:
            return None
        return relocated.find_new_location(self.relocated_maps, address, self.recipient_delimiter,
                                           self.is_local)

    def unknown(self, address: str, domain: str, local: bool, relay_domain: bool) -> str | None:
        """The table an unknown recipient is missing from (``virtual mailbox
        table``, ``relay recipient table``), or None.  Raises TableError."""
        if local or not domain:
            return None
        if self.is_virtual_mailbox_domain(domain):
            if self.virtual_mailbox_maps and not self._known(self.virtual_mailbox_maps, address):
                return VIRTUAL_TABLE
            return None
        if relay_domain and self.relay_recipient_maps \
                and not self._known(self.relay_recipient_maps, address):
            return RELAY_TABLE
        return None

    def check(self, written: str, address: str, domain: str, *, local: bool,
              relay_domain: bool) -> Reply | None:
        """The reject reply for this recipient, or None (the local check is next)."""
        try:
            moved = self.moved(address)
            if moved is not None:
                return replies.recipient_rejected(written, relocated.DSN, relocated.moved_text(moved))
            table = self.unknown(address, domain, local, relay_domain)
        except TableError:
            return replies.lookup_failure(written)
        return replies.user_unknown_in(written, table) if table else None
