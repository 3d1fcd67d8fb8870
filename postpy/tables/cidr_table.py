"""``cidr:`` tables: IPv4 and IPv6 networks in order, first match wins.

Used wherever a table is (:mod:`postpy.tables.maps`), typically for client
addresses in smtpd access maps and ``postmap -q``.  The file syntax shared
with ``regexp:`` (logical lines, ``!`` negation, ``if``/``endif``, errors as
TableError with file and line) is in :mod:`postpy.tables.pattern_table`;
this module reads the patterns (cidr_table(5)):

- ``network/prefix result`` or ``address result`` (an exact match, /32 or
  /128); the address may be written in brackets: ``[2001:db8::]/32``,
  ``[10.0.0.0/8]``;
- host bits set under the prefix (``10.0.0.1/8``), a prefix longer than
  the address, or text that is no address are syntax errors; IPv4 octets
  with leading zeros are refused (Postfix would read them as octal);
- a key is compared as an address, so ``2001:DB8:0::1`` finds
  ``2001:db8::1``; IPv4 patterns never match IPv6 keys (not even
  ``::ffff:a.b.c.d``) and the other way round, as in Postfix; a key that is
  not an address (a host name, ``[1.2.3.4]``, a scoped ``fe80::1%eth0``)
  finds nothing;
- results are literal text (no ``$`` substitution).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postpy.tables.pattern_table import Expand, SyntaxProblem, Test

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(token: str) -> Network:
    """``addr``, ``addr/len``, ``[addr]/len`` or ``[addr/len]`` as a network."""
    text = token
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close != len(text) - 1 and not text.startswith("/", close + 1)):
            raise SyntaxProblem(f"bad address pattern: \"{token}\"")
        text = text[1:close] + text[close + 1:]
    address, slash, prefix = text.partition("/")
    try:
        if "%" in address:
            raise ValueError(address)
        parsed: Address = ipaddress.ip_address(address)
    except ValueError:
        raise SyntaxProblem(f"bad address pattern: \"{token}\"") from None
    if not slash:
        return ipaddress.ip_network(parsed)
    if not (prefix.isascii() and prefix.isdigit()) or len(prefix) > 3:
        raise SyntaxProblem(f"bad mask value in \"{token}\"")
    if int(prefix) > parsed.max_prefixlen:
        raise SyntaxProblem(f"bad mask length in \"{token}\"")
    network = ipaddress.ip_network(f"{parsed}/{int(prefix)}", strict=False)
    if network.network_address != parsed:
        raise SyntaxProblem(f"non-null host address bits in \"{token}\", perhaps you should use "
                            f"\"{network}\" instead")
    return network


def parse_key(key: str) -> Address | None:
    """The address a lookup key names, or None."""
    if "%" in key or "/" in key:
        return None
    try:
        return ipaddress.ip_address(key)
    except ValueError:
        return None


@dataclass(frozen=True)
class CidrSyntax:
    kind: str = "cidr"

    def prepare(self, key: str) -> object | None:
        return parse_key(key)

    def pattern(self, text: str) -> tuple[Test, str, int]:
        token, *more = text.split(None, 1)
        network = parse_network(token)
        rest = more[0] if more else ""

        def test(key: object) -> object | None:
            return key if key in network else None       # other address families: False
        return test, rest, -1

    def result(self, text: str, groups: int, negated: bool) -> Expand:
        return lambda _found: text


CIDR = CidrSyntax()
