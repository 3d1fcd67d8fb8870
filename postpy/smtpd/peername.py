"""The client's host name, looked up once when it connects.

smtpd logs a client as ``name[addr]``.  The name comes from the address
(PTR), is checked against the name's own addresses (A/AAAA), and is used
only when one of them is the client's: that is the verified name Postfix
calls ``client_name``.  A PTR name that does not come back to the
address is kept as the *reverse* name (``reverse_client_name``) only.

:func:`lookup` answers a :class:`PeerName`: ``name`` and ``reverse_name``
(``unknown`` when there is none), and ``status``/``reverse_status``:
``ok``, ``fail`` (no such name, or it does not map back), or ``temp``
(the name server did not answer in time).  ``reject_unknown_client_hostname``
and ``reject_unknown_reverse_client_hostname`` look at those.

``/etc/hosts`` is read first (as ``hosts: files dns`` in nsswitch.conf),
so ``127.0.0.1`` is ``localhost`` without any name server; then DNS through
:mod:`postpy.smtpd.dnsquery` (``dns_resolver_address``), bounded by
``smtpd_dns_timeout``.  A loopback address that DNS has no name for (no
such name, no PTR record) is this host: ``localhost``, as smtpd always
called it; one whose lookup fails is ``unknown`` like any other.  With ``smtpd_peername_lookup = no`` nothing is
looked up and every client is ``unknown``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postpy.smtpd.dnsquery import NODATA, NXDOMAIN, OK, Lookups

UNKNOWN = "unknown"
HOSTS_FILE = "/etc/hosts"


@dataclass(frozen=True)
class PeerName:
    name: str = UNKNOWN
    reverse_name: str = UNKNOWN
    status: str = "fail"            # ok | fail | temp
    reverse_status: str = "fail"


def read_hosts(path: str = HOSTS_FILE) -> dict[str, list[str]]:
    """Address -> names from a hosts file (empty when unreadable)."""
    table: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return table
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            addr = str(ipaddress.ip_address(words[0]))
        except ValueError:
            continue
        table.setdefault(addr, []).extend(w.lower() for w in words[1:])
    return table


def reverse_pointer(addr: str) -> str:
    return ipaddress.ip_address(addr).reverse_pointer


async def lookup(addr: str, dns: Lookups, hosts: dict[str, list[str]]) -> PeerName:
    """The client's verified and reverse names."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return PeerName()
    names = hosts.get(str(ip))
    if names:
        return PeerName(names[0], names[0], "ok", "ok")
    answer = await dns.query(reverse_pointer(addr), "PTR")
    if answer.status in (NXDOMAIN, NODATA):
        return PeerName("localhost", "localhost", "ok", "ok") if ip.is_loopback else PeerName()
    if answer.status != OK or not answer.records:
        return PeerName(status="temp", reverse_status="temp")
    reverse = answer.records[0].rstrip(".").lower()
    if not reverse:
        return PeerName()
    forward = await dns.query(reverse, "A" if ip.version == 4 else "AAAA")
    if forward.status == OK and any(_same(r, ip) for r in forward.records):
        return PeerName(reverse, reverse, "ok", "ok")
    status = "temp" if forward.status not in (OK, NXDOMAIN, NODATA) else "fail"
    return PeerName(UNKNOWN, reverse, status, "ok")


def _same(record: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(record) == ip
    except ValueError:
        return False
