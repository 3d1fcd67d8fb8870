"""cleanup: virtual alias expansion of envelope recipients (virtual(5)).

Every envelope recipient is looked up in ``virtual_alias_maps`` (keys and
value syntax in :mod:`postpy.tables.address_map`: ``user@domain``, ``user``
for local domains, ``@domain``; extensions with
``propagate_unmatched_extensions`` having ``virtual``).  A match replaces
the recipient by every address of the value, and each of those is looked
up again (recursion), depth first, the result in table order:

- an address that maps to itself (``a@x = a@x, b@y``) is kept as a final
  recipient, and its other addresses are expanded;
- an address met a second time in the same expansion adds nothing (its
  mail is already on its way), as duplicate elimination does in
  aliases(5): ``a = b, c`` and ``c = a`` give ``b``;
- a **loop** is an expansion that ends with no address at all because every
  path comes back to an address already being expanded (``a = b``, ``b =
  a``).  That recipient cannot be delivered anywhere: the message is
  refused with ``5.4.6`` (an SMTP client gets 554 after DATA and tells the
  sender; a local submission is returned to the sender), instead of
  spinning until a limit as Postfix does;
- nesting deeper than ``virtual_alias_recursion_limit``, or more than
  ``virtual_alias_expansion_limit`` final addresses for one recipient,
  refuses the message for now (``4.6.0 Alias expansion error``), as
  Postfix does: the table needs fixing, the mail is not lost;
- a table that fails (or holds a malformed value) refuses it for now too.

Each final address keeps the recipient's DSN options (ORCPT, NOTIFY) and
its original form as ``orig``, so delivery logs show
``to=<b@example>, orig_to=<a@virtual.example>``.

A recipient in a virtual alias domain (``virtual_alias_domains``) that
has no mapping is not this module's business: qmgr routes it to an
``error`` route, ``5.1.1 User unknown in virtual alias table``
(:mod:`postpy.qmgr.resolve`), and smtpd refuses it at RCPT already.
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.cleanup.envelope import Refusal
from postpy.config.maincf import Config
from postpy.tables.address_map import AddressMap
from postpy.tables.maps import TableError
from postpy.util import maillog

EXPANSION_ERROR = "4.6.0 Alias expansion error"
LOOKUP_ERROR = "4.3.0 Temporary lookup failure"


def loop_error(address: str) -> str:
    return f"5.4.6 Virtual alias loop for <{address}>"


@dataclass
class VirtualAlias:
    table: AddressMap | None = None
    recursion_limit: int = 1000
    expansion_limit: int = 1000

    @classmethod
    def from_config(cls, cfg: Config) -> VirtualAlias:
        table = AddressMap.from_config(cfg, "virtual_alias_maps", "virtual")
        return cls(table or None, recursion_limit=cfg.get_int("virtual_alias_recursion_limit"),
                   expansion_limit=cfg.get_int("virtual_alias_expansion_limit"))

    def __bool__(self) -> bool:
        return bool(self.table)

    def _lookup(self, address: str, queue_id: str) -> list[str] | None:
        assert self.table is not None
        try:
            found = self.table.find(address)
        except TableError as exc:
            maillog.warning(f"{queue_id}: virtual_alias_maps lookup problem for {address}: {exc}"
                            " -- message not accepted, try again later")
            raise Refusal("temp", LOOKUP_ERROR) from None
        return None if found is None else found.addresses

    def expand(self, address: str, queue_id: str = "") -> list[str]:
        """The final addresses of ``address`` (itself when it has no
        mapping); raises :class:`~postpy.cleanup.envelope.Refusal`."""
        if not self.table:
            return [address]
        final: list[str] = []
        seen = {address.lower()}
        stack: list[tuple[str, int]] = [(address, 0)]        # depth-first, in table order
        while stack:
            current, depth = stack.pop()
            result = self._lookup(current, queue_id)
            if result is None:
                final.append(current)
            else:
                if depth >= self.recursion_limit:
                    maillog.warning(f"{queue_id}: unreasonable virtual_alias_maps map nesting "
                                    f"for {address} -- message not accepted, try again later")
                    raise Refusal("temp", EXPANSION_ERROR)
                children: list[tuple[str, int]] = []
                for target in result:
                    key = target.lower()
                    if key == current.lower():
                        final.append(current)        # maps to itself: kept, not expanded again
                    elif key not in seen:
                        seen.add(key)
                        children.append((target, depth + 1))
                stack.extend(reversed(children))
            if len(final) > self.expansion_limit:
                maillog.warning(f"{queue_id}: unreasonable virtual_alias_maps map expansion size "
                                f"for {address} -- message not accepted, try again later")
                raise Refusal("temp", EXPANSION_ERROR)
        if not final:
            maillog.warning(f"{queue_id}: virtual_alias_maps loop for {address}: no final address")
            raise Refusal("perm", loop_error(address))
        unique: dict[str, str] = {}
        for final_address in final:
            unique.setdefault(final_address.lower(), final_address)
        return list(unique.values())
