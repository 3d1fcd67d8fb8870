"""DNS blocklists and allowlists: reject_rbl_client, reject_rhsbl_*, permit_dnswl_client.

A client address ``192.0.2.7`` is listed in ``zone`` when
``7.2.0.192.zone`` has an A record (IPv6: the 32 reversed nibbles); a
domain ``example.org`` is listed in an RHS list when ``example.org.zone``
has one.  ``zone=127.0.0.2`` accepts only that answer; each octet may be a
pattern ``[2;4..6]`` (numbers and ranges, ``;``-separated), as in Postfix.

A listed client gets the reply of ``rbl_reply_maps`` (looked up by the
zone) or ``default_rbl_reply``, a template expanded with ``$rbl_code``
(``maps_rbl_reject_code``), ``$rbl_class`` (``Client host``, ``Sender
address``, ...), ``$rbl_what`` (the address or domain looked up),
``$rbl_domain``, ``$rbl_reason`` (the zone's TXT record, if any) and the
client, helo, sender and recipient names; the default reads
``554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zone``.

A list that does not answer (timeout, SERVFAIL) counts as "not listed":
a dead blocklist never stops mail.  For an allowlist the same failure is
DEFER_IF_REJECT, as Postfix does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from postpy.smtpd.dnsquery import OK, Lookups
from postpy.smtpd.replies import Reply
from postpy.smtpd.verdict import split_dsn

_OCTET = re.compile(r"\[([0-9;.]+)\]|([0-9]+)")


class FilterError(ValueError):
    """A ``zone=d.d.d.d`` filter that is not four octet patterns."""


@dataclass(frozen=True)
class ListSpec:
    zone: str
    filter: tuple[frozenset[int] | None, ...] | None = None   # None: any answer

    @classmethod
    def parse(cls, text: str) -> ListSpec:
        zone, eq, pattern = text.partition("=")
        zone = zone.strip().rstrip(".").lower()
        if not zone:
            raise FilterError(f"missing DNS list domain in \"{text}\"")
        if not eq:
            return cls(zone)
        octets = pattern.split(".") if "[" not in pattern else _split_octets(pattern)
        if len(octets) != 4:
            raise FilterError(f"bad reply filter \"{pattern}\" (need d.d.d.d)")
        return cls(zone, tuple(_octet_set(o, pattern) for o in octets))

    def matches(self, record: str) -> bool:
        if self.filter is None:
            return True
        parts = record.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return False
        return all(allowed is None or int(p) in allowed for p, allowed in zip(parts, self.filter, strict=True))


def _split_octets(pattern: str) -> list[str]:
    out, depth, buf = [], 0, ""
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            out.append(buf)
            buf = ""
        else:
            buf += ch
    out.append(buf)
    return out


def _octet_set(text: str, pattern: str) -> frozenset[int]:
    m = _OCTET.fullmatch(text)
    if m is None:
        raise FilterError(f"bad reply filter \"{pattern}\"")
    if m.group(2) is not None:
        return frozenset({int(m.group(2))})
    values: set[int] = set()
    for item in m.group(1).split(";"):
        low, dots, high = item.partition("..")
        if not low.isdigit() or (dots and not high.isdigit()):
            raise FilterError(f"bad reply filter \"{pattern}\"")
        values.update(range(int(low), int(high if dots else low) + 1))
    return frozenset(values)


def client_query(addr: str, zone: str) -> str | None:
    """``7.2.0.192.zone`` for ``192.0.2.7``; None for a non-address."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    rev = ip.reverse_pointer.rsplit(".", 2)[0]      # drop in-addr.arpa / ip6.arpa
    return f"{rev}.{zone}"


@dataclass(frozen=True)
class Listing:
    listed: bool
    failed: bool = False
    reason: str = ""


async def check(dns: Lookups, name: str, spec: ListSpec) -> Listing:
    """Is ``name`` (already joined with the zone) listed?"""
    answer = await dns.query(name, "A")
    if answer.status != OK:
        return Listing(False, failed=answer.status not in ("nxdomain", "nodata"))
    if not any(spec.matches(r) for r in answer.records):
        return Listing(False)
    txt = await dns.query(name, "TXT")
    return Listing(True, reason=" ".join(txt.records) if txt.status == OK else "")


def reply(template: str, values: Mapping[str, str], expand: Callable[[str, Mapping[str, str]], str],
          default_code: int) -> Reply:
    """The server reply from a ``default_rbl_reply``-style template."""
    text = expand(template, values).strip()
    code_text, _, rest = text.partition(" ")
    if len(code_text) == 3 and code_text.isdigit() and code_text[0] in "45":
        code, text = int(code_text), rest
    else:
        code = default_code
    dsn, rest = split_dsn(text)
    if not dsn or dsn[0] != str(code)[0]:
        dsn = f"{str(code)[0]}.7.1"
    return Reply.of(code, f"{dsn} {rest}")
