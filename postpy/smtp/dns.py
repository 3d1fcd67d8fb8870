"""Where the smtp client connects: next hop -> ordered list of server addresses.

Input is the next hop qmgr chose (RFC 5321 section 5.1 for the rules):

- ``example.org`` or ``example.org:2525``: look up MX records.  Hosts are
  tried by preference, in random order among equal preferences.  No MX
  records (NODATA) -> the domain's own A/AAAA records, as an implicit MX of
  preference 0.  A null MX (RFC 7505, ``0 .``) -> bounce 5.1.10.  NXDOMAIN
  -> bounce 5.1.2.  SERVFAIL or a timeout -> defer 4.4.3.
- ``[host]`` or ``[host]:port`` (relayhost, ``smtp:[host]:port`` in
  transport_maps): no MX lookup, just the host's addresses (or the literal
  address itself: ``[192.0.2.1]``, ``[ipv6:2001:db8::1]``).
- a list of those separated by commas or spaces (Postfix >= 3.5 relayhost
  syntax): tried in the order written.

Mail loops: an MX host that is this system (its name is ``myhostname`` or
one of its addresses is one we receive mail on, see
:mod:`postpy.smtp.localaddrs`) and every less preferred host are dropped;
if that leaves none, the mail bounces with 5.4.6 "mail for X loops back to
myself" (Postfix's rule; RFC 5321 section 5.1 says the same).

Lookups use dnspython's asyncio resolver: the system's resolv.conf, or the
server in ``dns_resolver_address`` (``addr`` or ``addr:port`` or
``[addr]:port``).  ``smtp_host_lookup = native`` (or ``dns, native``) uses
getaddrinfo(3) for host addresses, which also reads /etc/hosts.  The
resolver is built before the chroot, when resolv.conf is still readable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from postpy.smtp.failure import DeliveryFailure, permanent, temporary
from postpy.util.dnsresolver import make_resolver as make_resolver  # re-exported

NOT_FOUND = "Host not found"
TRY_AGAIN = "Host not found, try again"
NO_DATA = "Host found but no data record of requested type"


class _NotFound(Exception):
    pass


class _TryAgain(Exception):
    pass


@dataclass(frozen=True)
class Nexthop:
    host: str
    port: int
    mx: bool            # False for [host]: no MX lookup


@dataclass(frozen=True)
class Target:
    """One server address to try."""

    host: str           # MX host name, or the literal as written
    address: str        # an IP address, or the path of a unix-domain socket (LMTP)
    port: int
    preference: int = 0
    unix: bool = False

    @property
    def relay(self) -> str:
        """``host[addr]:port`` as logs show it (``path[path]`` for a unix socket)."""
        if self.unix:
            return f"{self.host}[{self.address}]"
        return f"{self.host}[{self.address}]:{self.port}"


def parse_port(text: str, default: int) -> int:
    if not text:
        return default
    if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise temporary(f"mail system configuration error: bad port {text!r}", "4.3.5",
                        next_host=False) from None


def parse_nexthop(text: str, default_port: int) -> list[Nexthop]:
    """One or more next hops from qmgr's text (see the module text)."""
    hops: list[Nexthop] = []
    for word in text.replace(",", " ").split():
        if word.startswith("["):
            end = word.find("]")
            rest = word[end + 1:] if end > 0 else "x"
            if end <= 1 or (rest and not rest.startswith(":")):
                raise temporary(f"mail system configuration error: malformed next hop {word!r}",
                                "4.3.5", next_host=False)
            hops.append(Nexthop(word[1:end], parse_port(rest[1:], default_port), False))
        elif word.count(":") == 1:
            host, _, port = word.partition(":")
            hops.append(Nexthop(host, parse_port(port, default_port), True))
        else:
            hops.append(Nexthop(word, default_port, True))
    if not hops:
        raise temporary("mail system configuration error: empty next hop", "4.3.5", next_host=False)
    return hops


def literal_address(host: str) -> str | None:
    """``192.0.2.1``, ``ipv6:2001:db8::1`` or ``2001:db8::1`` as an address, else None."""
    text = host[5:] if host.lower().startswith("ipv6:") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _error_text(name: str, rdtype: str, reason: str) -> str:
    return f"Host or domain name not found. Name service error for name={name} type={rdtype}: {reason}"


@dataclass
class DestinationResolver:
    """Turns next hops into :class:`Target` lists (see the module text)."""

    resolver: dns.asyncresolver.Resolver
    myhostname: str = ""
    own_addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=set)
    families: tuple[str, ...] = ("A", "AAAA")      # from inet_protocols
    lookup: tuple[str, ...] = ("dns",)             # smtp_host_lookup
    rng: random.Random = field(default_factory=random.Random)

    async def targets(self, nexthop: str, default_port: int) -> list[Target]:
        """All addresses to try, best first; raises DeliveryFailure."""
        result: list[Target] = []
        failure: DeliveryFailure | None = None
        for hop in parse_nexthop(nexthop, default_port):
            try:
                if hop.mx and "dns" in self.lookup and literal_address(hop.host) is None:
                    result += await self._by_mx(hop)
                else:
                    result += await self._host_targets(hop.host, hop.port, 0)
            except DeliveryFailure as exc:
                failure = failure if failure and not failure.permanent else exc
        if not result:
            assert failure is not None
            raise failure
        return result

    # -- MX -------------------------------------------------------------
    async def _by_mx(self, hop: Nexthop) -> list[Target]:
        domain = hop.host.rstrip(".")
        try:
            answer = await self._query(domain, "MX")
        except _NotFound:
            raise permanent(_error_text(domain, "MX", NOT_FOUND), "5.1.2") from None
        except _TryAgain:
            raise temporary(_error_text(domain, "MX", TRY_AGAIN), "4.4.3", next_host=False) from None
        if not answer:
            return await self._host_targets(domain, hop.port, 0)
        mx = [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer]
        if any(name in ("", ".") for _, name in mx):
            raise permanent(f"Domain {domain} does not accept mail (nullMX)", "5.1.10")
        self.rng.shuffle(mx)
        mx.sort(key=lambda item: item[0])          # stable: equal preferences stay shuffled
        lists = await asyncio.gather(*(self._host_targets(name, hop.port, pref) for pref, name in mx),
                                     return_exceptions=True)
        targets: list[Target] = []
        failure: DeliveryFailure | None = None
        self_pref: int | None = None
        for (pref, name), found in zip(mx, lists, strict=True):
            if self._is_self(name, []) and (self_pref is None or pref < self_pref):
                self_pref = pref
            if isinstance(found, DeliveryFailure):
                failure = failure if failure and not failure.permanent else found
                continue
            if isinstance(found, BaseException):
                raise found
            if self._is_self(name, found) and (self_pref is None or pref < self_pref):
                self_pref = pref
            targets += found
        if self_pref is not None:
            targets = [t for t in targets if t.preference < self_pref]
            if not targets:
                raise permanent(f"mail for {domain} loops back to myself", "5.4.6")
        if not targets:
            assert failure is not None
            raise failure
        return targets

    def _is_self(self, name: str, targets: list[Target]) -> bool:
        if self.myhostname and name.lower() == self.myhostname.lower().rstrip("."):
            return True
        return any(ipaddress.ip_address(t.address) in self.own_addresses for t in targets)

    # -- addresses ------------------------------------------------------
    async def _host_targets(self, host: str, port: int, pref: int) -> list[Target]:
        literal = literal_address(host)
        if literal is not None:
            return [Target(host, literal, port, pref)]
        addresses: list[str] = []
        reason = ""
        if "dns" in self.lookup:
            addresses, reason = await self._dns_addresses(host)
        if not addresses and "native" in self.lookup:
            addresses, reason = await self._native_addresses(host, port)
        if not addresses:
            if reason == TRY_AGAIN:
                raise temporary(_error_text(host, "A", reason), "4.4.3", next_host=False)
            raise permanent(_error_text(host, "A", reason or NOT_FOUND), "5.4.4")
        return [Target(host.rstrip("."), a, port, pref) for a in addresses]

    async def _dns_addresses(self, host: str) -> tuple[list[str], str]:
        answers = await asyncio.gather(*(self._query(host, t) for t in self.families),
                                       return_exceptions=True)
        addresses: list[str] = []
        reason = NO_DATA
        for found in answers:
            if isinstance(found, _TryAgain):
                reason = TRY_AGAIN
            elif isinstance(found, _NotFound):
                reason = reason if reason == TRY_AGAIN else NOT_FOUND
            elif isinstance(found, BaseException):
                raise found
            else:
                addresses += [r.address for r in found]
        return addresses, reason

    async def _native_addresses(self, host: str, port: int) -> tuple[list[str], str]:
        family = 0
        if self.families == ("A",):
            family = socket.AF_INET
        elif self.families == ("AAAA",):
            family = socket.AF_INET6
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            return [], TRY_AGAIN if exc.errno == socket.EAI_AGAIN else NOT_FOUND
        seen: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in seen:
                seen.append(address)
        return seen, NOT_FOUND

    async def _query(self, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
        """Records of one type; [] for NODATA; _NotFound or _TryAgain otherwise."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise _NotFound(name) from None
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.YXDOMAIN:
            raise _NotFound(name) from None
        except dns.exception.DNSException:
            # SERVFAIL, REFUSED (NoNameservers), timeouts, malformed answers.
            raise _TryAgain(name) from None
        return list(answer)


def families_for(inet_protocols: list[str]) -> tuple[str, ...]:
    """``inet_protocols`` -> DNS record types to ask for."""
    words = {w.lower() for w in inet_protocols}
    if "all" in words or {"ipv4", "ipv6"} <= words:
        return ("A", "AAAA")
    if "ipv6" in words:
        return ("AAAA",)
    return ("A",)
