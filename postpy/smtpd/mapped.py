"""smtpd: recipients that cleanup's address mapping knows, and virtual alias domains.

Part of ``smtpd_reject_unlisted_recipient`` (and the
``reject_unlisted_recipient`` restriction), asked first by
:meth:`postpy.smtpd.relay.RelayPolicy.unlisted`, in Postfix's order:

1. A recipient that ``recipient_canonical_maps``, ``canonical_maps`` or
   ``virtual_alias_maps`` has a mapping for is known, whatever its domain:
   cleanup will rewrite it (:mod:`postpy.cleanup.address_mapping`), so
   the other recipient tables are not asked.
2. A recipient in a virtual alias domain (``virtual_alias_domains``, not a
   local one) without a mapping is refused:
   ``550 5.1.1 <addr>: Recipient address rejected: User unknown in virtual
   alias table`` -- qmgr would only bounce it
   (:func:`postpy.qmgr.resolve.virtual_alias_route`).

Lookups are cleanup's own (:class:`postpy.tables.address_map.AddressMap`:
``user@domain``, ``user`` for local domains, ``@domain``, extensions).  A
table that fails answers ``451 4.3.0 <addr>: Temporary lookup failure``.
A virtual alias domain is also a destination of this host for
``reject_unauth_destination`` (:meth:`MappedRecipients.is_alias_domain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.config.maincf import Config
from postpy.smtpd import replies
from postpy.smtpd.replies import Reply
from postpy.tables.address_map import AddressMap, local_domain_test
from postpy.tables.domain_list import DomainList
from postpy.tables.maps import TableError

ALIAS_TABLE = "virtual alias table"


@dataclass
class MappedRecipients:
    maps: list[AddressMap] = field(default_factory=list)
    alias_domains: list[str] = field(default_factory=list)    # virtual_alias_domains

    @classmethod
    def from_config(cls, cfg: Config) -> MappedRecipients:
        is_local = local_domain_test(cfg)
        maps = [AddressMap.from_config(cfg, name, kind, is_local)
                for name, kind in (("recipient_canonical_maps", "canonical"),
                                   ("canonical_maps", "canonical"),
                                   ("virtual_alias_maps", "virtual"))]
        return cls([m for m in maps if m], cfg.get_list("virtual_alias_domains"))

    def is_alias_domain(self, domain: str, local: bool = False) -> bool:
        """Is ``domain`` a virtual alias domain (a local one never is)?
        Raises TableError."""
        return bool(self.alias_domains) and not local and bool(domain) and \
            DomainList.parse(self.alias_domains).matches(domain)

    def known(self, address: str) -> bool:
        """Does a mapping table have ``address``?  Raises TableError."""
        return any(m.find(address) is not None for m in self.maps)

    def check(self, written: str, address: str, domain: str, *, local: bool) -> Reply | None:
        """``250 2.1.5 Ok`` for a known recipient (ask nothing else), a reject
        reply, or None (the other recipient checks decide)."""
        try:
            if self.known(address):
                return replies.RCPT_OK
            if self.is_alias_domain(domain, local):
                return replies.user_unknown_in(written, ALIAS_TABLE)
        except TableError:
            return replies.lookup_failure(written)
        return None
