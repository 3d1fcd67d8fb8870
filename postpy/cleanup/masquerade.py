"""cleanup: address masquerading (``masquerade_domains``).

Masquerading hides internal host names: with ``masquerade_domains =
example.com``, ``user@host.dept.example.com`` becomes ``user@example.com``.
cleanup applies it after canonical mapping, to the address classes in
``masquerade_classes`` (default: envelope_sender, header_sender,
header_recipient -- not envelope recipients, so mail still reaches the
host it is addressed to).

The list is tried in order and the first entry that matches decides, as
Postfix does:

- an address whose domain *is* the entry stays as it is (so
  ``masquerade_domains = sub.example.com, example.com`` keeps
  ``sub.example.com`` and strips hosts below it to it);
- an address in a subdomain of the entry gets the entry as its domain;
- ``!entry``: an address at or below entry stays as it is (``!
  sub.example.com, example.com`` masquerades everything below example.com
  except sub.example.com and its hosts).

``masquerade_exceptions`` lists user names (local parts, compared in lower
case; ``type:table`` entries are looked up) whose addresses are never
masqueraded, e.g. ``root``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.config.maincf import Config
from postpy.mail.address import split_address, unquote_local
from postpy.tables.maps import lookup_in_maps, split_spec


@dataclass
class Masquerade:
    domains: list[str] = field(default_factory=list)        # as written, "!" included
    exceptions: list[str] = field(default_factory=list)     # user names and type:table
    classes: frozenset[str] = frozenset({"envelope_sender", "header_sender", "header_recipient"})

    @classmethod
    def from_config(cls, cfg: Config) -> Masquerade:
        return cls(domains=cfg.get_list("masquerade_domains"),
                   exceptions=cfg.get_list("masquerade_exceptions"),
                   classes=frozenset(w.lower() for w in cfg.get_list("masquerade_classes")))

    def __bool__(self) -> bool:
        return bool(self.domains)

    def excepted(self, local: str) -> bool:
        """Is the user ``local`` in masquerade_exceptions?  A table that
        fails raises TableError."""
        user = local.lower()
        tables = [w for w in self.exceptions if split_spec(w, "")[0]]
        names = {w.lower() for w in self.exceptions if w not in tables}
        return user in names or (bool(tables) and lookup_in_maps(tables, user) is not None)

    def rewrite(self, address: str, address_class: str) -> str:
        """``address`` masqueraded, when ``address_class`` is masqueraded."""
        if not self.domains or address_class not in self.classes:
            return address
        written, domain = split_address(address)
        if not domain or domain.startswith("["):
            return address
        folded = domain.lower().rstrip(".")
        for entry in self.domains:
            negate = entry.startswith("!")
            masq = (entry[1:] if negate else entry).lower().strip(".")
            if not masq:
                continue
            if folded == masq:
                return address
            if folded.endswith("." + masq):
                if negate or self.excepted(unquote_local(written)):
                    return address
                return f"{written}@{masq}"
        return address
