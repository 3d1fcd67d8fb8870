"""relocated(5): users who have moved, and what their mail is told.

``relocated_maps`` maps an address to its new location (an address, or
any contact text).  Mail for such a recipient is never delivered:

- at RCPT, smtpd answers ``550 5.1.6 <addr>: Recipient address rejected:
  User has moved to NEWADDR`` (:mod:`postpy.smtpd.recipients`);
- mail that got in anyway (local submission, or accepted before the table
  changed) is bounced by routing (:func:`postpy.qmgr.resolve.resolve`) with
  ``5.1.6 User has moved to NEWADDR``, whatever its domain's class and
  even when ``transport_maps`` names the address: as in Postfix, this rule
  comes last.  Alias expansion inside local is not checked (Postfix's
  limitation too).

Keys, first hit wins (relocated(5)): ``user@domain``, then ``user`` when
the domain is ``$myorigin`` or a local destination, then ``@domain``; each
address form with its extension first, then without
(:mod:`postpy.tables.addrfind`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from postpy.config.maincf import Config
from postpy.tables.addrfind import find_address

DSN = "5.1.6"


def moved_text(new_location: str) -> str:
    """Postfix's wording, without the status code."""
    return f"User has moved to {new_location}"


def find_new_location(maps: Sequence[str], address: str, delimiter: str,
                      is_local: Callable[[str], bool]) -> str | None:
    """Where ``address`` moved to, or None.  Raises
    :class:`postpy.tables.maps.TableError`."""
    value = find_address(maps, address, delimiter, is_local)
    return value.strip() if value is not None else None


def new_location(cfg: Config, address: str) -> str | None:
    """:func:`find_new_location` with main.cf's settings."""
    maps = cfg.get_list("relocated_maps")
    if not maps:
        return None
    from postpy.tables.address_map import local_domain_test

    return find_new_location(maps, address, cfg.get("recipient_delimiter"), local_domain_test(cfg))
