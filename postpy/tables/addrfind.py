"""Looking a whole mail address up in ``*_maps`` tables, Postfix's way.

The one definition of the address keys (:func:`address_keys`), used by
cleanup's address mapping (:mod:`postpy.tables.address_map`) and by the
tables whose values are not address lists (:func:`find_address`, raw
values): ``relocated_maps`` (routing and smtpd's RCPT check),
``virtual_mailbox_maps`` and ``relay_recipient_maps`` (smtpd's RCPT
check).  The keys are tried in the order of Postfix's address lookups
(relocated(5), virtual(5)), first hit wins:

1. ``user+ext@domain``, then ``user@domain`` without the extension;
2. only when the domain is this host's own (``$myorigin``, a local
   destination) or there is none: ``user+ext``, then ``user``;
3. ``@domain``.

The extension is cut at the first ``recipient_delimiter`` character found
(none when the setting is empty, or when nothing would be left of the
user).  Keys are in lower case; a table that fails raises
:class:`postpy.tables.maps.TableError`, which callers turn into a
temporary failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from postpy.mail.address import split_address, unquote_local
from postpy.tables.maps import lookup_in_maps


def address_keys(address: str, delimiter: str = "", local_domain: bool = False) -> list[str]:
    """The lookup keys for ``address``, best first (see the module docstring)."""
    local, domain = split_address(address)
    local, domain = unquote_local(local).lower(), domain.lower().rstrip(".")
    bare = ""
    if delimiter:
        cut = min((i for i, ch in enumerate(local) if ch in delimiter), default=-1)
        if cut > 0:
            bare = local[:cut]
    locals_ = [local] + ([bare] if bare else [])
    keys = [f"{part}@{domain}" for part in locals_] if domain else []
    if local_domain or not domain:
        keys += locals_
    if domain:
        keys.append(f"@{domain}")
    return keys


def find_address(maps: Sequence[str], address: str, delimiter: str,
                 is_local: Callable[[str], bool]) -> str | None:
    """The value of the first key any of ``maps`` has, or None.  ``is_local``:
    is a domain this host's own (``$myorigin``, a local destination)?"""
    if not maps or not address:
        return None
    domain = split_address(address)[1]
    for key in address_keys(address, delimiter, not domain or is_local(domain)):
        value = lookup_in_maps(list(maps), key)
        if value is not None:
            return value
    return None
