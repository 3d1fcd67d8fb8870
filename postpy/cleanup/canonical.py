"""cleanup: canonical(5) address mapping, one address at a time.

cleanup replaces addresses before mail is queued, through three groups of
tables, each limited to some address classes:

=============================  =========================================
``sender_canonical_maps``      ``sender_canonical_classes`` (default
                               envelope_sender, header_sender)
``recipient_canonical_maps``   ``recipient_canonical_classes`` (default
                               envelope_recipient, header_recipient)
``canonical_maps``             ``canonical_classes`` (default all four)
=============================  =========================================

A sender goes through ``sender_canonical_maps`` then ``canonical_maps``; a
recipient through ``recipient_canonical_maps`` then ``canonical_maps``
(Postfix's order).  Each table is applied recursively: the result is
looked up again, until it is not found, maps to itself, or after
:data:`MAX_NESTING` steps (a warning; the last result is kept).  Only the
first address of a multi-address value counts (a warning).  Lookups are
those of :mod:`postpy.tables.address_map` (canonical(5) key order,
``@domain``, extensions with ``propagate_unmatched_extensions`` having
``canonical``).

A table that fails, or holds a malformed value, raises
:class:`postpy.tables.maps.TableError`; cleanup then refuses the message
for now (4.3.0), as Postfix does, and the client tries again later.
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.config.maincf import Config
from postpy.tables.address_map import AddressMap
from postpy.util import maillog

ENVELOPE_SENDER = "envelope_sender"
ENVELOPE_RECIPIENT = "envelope_recipient"
HEADER_SENDER = "header_sender"
HEADER_RECIPIENT = "header_recipient"
CLASSES = (ENVELOPE_SENDER, ENVELOPE_RECIPIENT, HEADER_SENDER, HEADER_RECIPIENT)
SENDER_CLASSES = (ENVELOPE_SENDER, HEADER_SENDER)
MAX_NESTING = 10            # as Postfix's cleanup_map11


def parse_classes(cfg: Config, name: str) -> frozenset[str]:
    """The address classes of parameter ``name``; an unknown word is
    ignored with a warning (Postfix does the same)."""
    words = {w.lower() for w in cfg.get_list(name)}
    for word in sorted(words - set(CLASSES)):
        maillog.warning(f"{name}: ignoring unknown address class {word!r}")
    return frozenset(words & set(CLASSES))


def map_one(table: AddressMap, address: str) -> str:
    """``address`` through one table, recursively (the module text)."""
    current = address
    for _ in range(MAX_NESTING):
        found = table.find(current)
        if found is None:
            return current
        if len(found.addresses) > 1:
            maillog.warning(f"{table.name}: multi-valued entry for {current} ({found.key}): "
                            "using the first address")
        new = found.addresses[0]
        if new.lower() == current.lower():
            return current
        current = new
    maillog.warning(f"{table.name}: unreasonable nesting for {address}: stopped at {current}")
    return current


@dataclass
class Canonical:
    """The three canonical tables and their classes."""

    common: AddressMap | None = None
    sender: AddressMap | None = None
    recipient: AddressMap | None = None
    common_classes: frozenset[str] = frozenset(CLASSES)
    sender_classes: frozenset[str] = frozenset(SENDER_CLASSES)
    recipient_classes: frozenset[str] = frozenset({ENVELOPE_RECIPIENT, HEADER_RECIPIENT})

    @classmethod
    def from_config(cls, cfg: Config) -> Canonical:
        def table(name: str) -> AddressMap | None:
            found = AddressMap.from_config(cfg, name, "canonical")
            return found or None

        return cls(common=table("canonical_maps"), sender=table("sender_canonical_maps"),
                   recipient=table("recipient_canonical_maps"),
                   common_classes=parse_classes(cfg, "canonical_classes"),
                   sender_classes=parse_classes(cfg, "sender_canonical_classes"),
                   recipient_classes=parse_classes(cfg, "recipient_canonical_classes"))

    def __bool__(self) -> bool:
        return bool(self.common or self.sender or self.recipient)

    def rewrite(self, address: str, address_class: str) -> str:
        """``address`` as the tables for ``address_class`` (one of
        :data:`CLASSES`) map it; the null address stays null."""
        if not address:
            return address
        if address_class in SENDER_CLASSES:
            first, first_classes = self.sender, self.sender_classes
        else:
            first, first_classes = self.recipient, self.recipient_classes
        for table, classes in ((first, first_classes), (self.common, self.common_classes)):
            if table and address_class in classes:
                address = map_one(table, address)
        return address
