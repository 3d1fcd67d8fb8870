"""Address lookups in canonical(5) and virtual(5) tables, with their results.

One lookup, shared by cleanup's address mapping (``canonical_maps``,
``sender_canonical_maps``, ``recipient_canonical_maps``,
``virtual_alias_maps``) and smtpd's recipient check
(:mod:`postpy.smtpd.mapped`), so that what smtpd accepts is what cleanup
maps.  :meth:`AddressMap.find` takes one address and gives the addresses
it maps to, or None.

Keys (:func:`lookup_keys`, the one definition: :mod:`postpy.tables.addrfind`
uses it for tables whose values are not addresses), tried in this order in
every table, with ``+`` standing for any ``recipient_delimiter``
character::

    user+ext@domain     the address as it is
    user@domain         without the extension
    user+ext            only when the domain is local: $myorigin, $mydestination,
    user                  an address literal of this host (or no domain)
    @domain             the catch-all, lowest precedence

Keys are in lower case, the local part quoted only when it must be.
``regexp:``, ``pcre:`` and ``cidr:`` tables are asked once, with the
whole address as it is (canonical(5), "REGULAR EXPRESSION TABLES").

The value is an address list parsed by :mod:`postpy.mail.addrlist`
(``a@x, b@y``; display names and comments allowed).  Then, as
canonical(5) and virtual(5) say:

- a first address of the form ``@otherdomain`` means the same user in
  otherdomain (``user@domain`` -> ``user@otherdomain``);
- when the key matched without the extension (``user@domain`` for
  ``user+ext@domain``) and extensions propagate
  (``propagate_unmatched_extensions``), the extension is added to every
  address of the result;
- an address without a domain gets ``@$myorigin`` (with
  ``append_at_myorigin``).

A value that is not an address list (empty, ``<<<``, a bad domain) is a
configuration error: it is logged with the table and key, and raised as
:class:`MalformedResult` (a :class:`~postpy.tables.maps.TableError`), so
the mail waits for the table to be fixed instead of going somewhere
unintended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from postpy.config.maincf import Config
from postpy.mail.address import (
    AddressError,
    join_address,
    quote_local,
    split_address,
    unquote_local,
    valid_domain,
)
from postpy.mail.addrlist import parse_address_list
from postpy.qmgr.resolve import is_local_destination, local_destinations, own_addresses
from postpy.tables.maps import TableError, open_table, split_spec
from postpy.util import maillog

__all__ = ["AddressMap", "Found", "Key", "MalformedResult", "local_domain_test", "lookup_keys",
           "split_extension"]

PATTERN_TYPES = frozenset({"regexp", "pcre", "cidr"})   # asked with the whole address only


class MalformedResult(TableError):
    """A table value that is not an address list."""


@dataclass(frozen=True)
class Key:
    text: str               # the lookup key
    extension: str          # the extension ("+ext") the key leaves out, "" when none
    at_domain: bool = False # the @domain catch-all


@dataclass(frozen=True)
class Found:
    addresses: list[str]    # the result, rewritten as the module text says
    key: str                # the key that matched
    spec: str               # the table that had it


def split_extension(local: str, delimiter: str) -> tuple[str, str]:
    """(user, "+ext") at the first delimiter character; (local, "") when
    there is none, or when nothing would be left of the user (as
    :func:`~postpy.tables.addrfind.address_keys` cuts it)."""
    if not delimiter:
        return local, ""
    cut = min((i for i, ch in enumerate(local) if ch in delimiter), default=-1)
    if cut <= 0:
        return local, ""
    return local[:cut], local[cut:]


def lookup_keys(address: str, delimiter: str, is_local: Callable[[str], bool]) -> list[Key]:
    """The keys of the module text, in order, for ``address``; ``is_local``
    says whether a (lower-case) domain is this host's own."""
    written, domain = split_address(address)
    local = unquote_local(written)
    domain = domain.lower().rstrip(".")
    user, ext = split_extension(local, delimiter)
    full, bare = quote_local(local).lower(), quote_local(user).lower()
    keys: list[Key] = []
    if domain:
        keys.append(Key(f"{full}@{domain}", ""))
        if ext:
            keys.append(Key(f"{bare}@{domain}", ext))
    if not domain or is_local(domain):
        keys.append(Key(full, ""))
        if ext:
            keys.append(Key(bare, ext))
    if domain:
        keys.append(Key(f"@{domain}", "", at_domain=True))
    return keys


def local_domain_test(cfg: Config) -> Callable[[str], bool]:
    """Is a domain local for the ``user`` keys: $myorigin, $mydestination,
    or an address literal of this host (no domain at all counts too)."""
    mydestination = local_destinations(cfg)
    addresses = own_addresses(cfg)
    myorigin = cfg.get("myorigin").lower().rstrip(".")

    def is_local(domain: str) -> bool:
        return domain.lower().rstrip(".") == myorigin or \
            is_local_destination(domain, mydestination, addresses)

    return is_local


def _with_extension(address: str, ext: str) -> str:
    written, domain = split_address(address)
    return join_address(unquote_local(written) + ext, domain)


def parse_result(value: str, address: str, unmatched_ext: str, *, propagate: bool,
                 myorigin: str) -> list[str]:
    """The addresses a table value stands for; ``unmatched_ext`` is the
    extension the matching key left out.  Raises AddressError."""
    text = value.strip()
    if not text:
        raise AddressError("empty result")
    local = unquote_local(split_address(address)[0])
    addresses: list[str] = []
    if text.startswith("@"):
        first, _, text = text.partition(",")
        domain = first[1:].strip()
        if not valid_domain(domain, utf8=True):
            raise AddressError(f"bad domain in {first.strip()!r}")
        user = local[:len(local) - len(unmatched_ext)] if unmatched_ext else local
        addresses.append(join_address(user, domain))
    addresses.extend(m.address for m in parse_address_list(text))
    if not addresses:
        raise AddressError("no address in result")
    if unmatched_ext and propagate:
        addresses = [_with_extension(a, unmatched_ext) for a in addresses]
    if myorigin:
        addresses = [a if split_address(a)[1] else f"{a}@{myorigin}" for a in addresses]
    return addresses


def _never(domain: str) -> bool:
    return False


@dataclass
class AddressMap:
    """Tables of one parameter, looked up the canonical(5)/virtual(5) way."""

    name: str                               # the parameter, for log lines
    specs: list[str]
    is_local: Callable[[str], bool] = _never
    delimiter: str = ""
    propagate: bool = False                 # propagate_unmatched_extensions has this class
    myorigin: str = ""                      # appended to unqualified results ("": never)

    @classmethod
    def from_config(cls, cfg: Config, name: str, propagate_class: str,
                    is_local: Callable[[str], bool] | None = None) -> AddressMap:
        """The map of parameter ``name``; ``propagate_class`` is its word in
        ``propagate_unmatched_extensions`` (``canonical``, ``virtual``)."""
        propagate = propagate_class in [w.lower() for w in cfg.get_list("propagate_unmatched_extensions")]
        return cls(name, cfg.get_list(name),
                   is_local=is_local if is_local is not None else local_domain_test(cfg),
                   delimiter=cfg.get("recipient_delimiter"), propagate=propagate,
                   myorigin=cfg.get("myorigin") if cfg.get_bool("append_at_myorigin") else "")

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _lookup(self, address: str) -> tuple[str, str, str, str] | None:
        """(value, key, unmatched extension, spec) of the first hit."""
        for n, key in enumerate(lookup_keys(address, self.delimiter, self.is_local)):
            for spec in self.specs:
                asked = key.text
                if split_spec(spec)[0] in PATTERN_TYPES:
                    if n:
                        continue                # the whole address, first round only
                    asked = address
                value = open_table(spec).lookup(asked)
                if value is not None:
                    return value, asked, key.extension if asked == key.text else "", spec
        return None

    def find(self, address: str) -> Found | None:
        """What ``address`` maps to, or None; raises TableError when a
        table fails or holds a malformed value for the key."""
        if not self.specs or not address:
            return None
        hit = self._lookup(address)
        if hit is None:
            return None
        value, key, ext, spec = hit
        try:
            result = parse_result(value, address, ext, propagate=self.propagate, myorigin=self.myorigin)
        except AddressError as exc:
            problem = f"{self.name}: {spec}: malformed value for key {key}: {value!r}: {exc}"
            maillog.warning(problem)
            raise MalformedResult(problem) from None
        return Found(result, key, spec)
