"""Next hop -> server addresses (postpy.smtp.dns) against a table-driven fake resolver.

The same cases run against a real DNS server (dnsmasq) in
tests/integration/test_smtp_mx.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from typing import Any

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from postpy.smtp.dns import DestinationResolver, Target, families_for, make_resolver
from postpy.smtp.failure import DeliveryFailure

NX = dns.resolver.NXDOMAIN()
SERVFAIL = dns.resolver.NoNameservers()
TIMEOUT = dns.exception.Timeout()


def rr(rdtype: str, text: str) -> Any:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)


ZONE: dict[tuple[str, str], Any] = {
    ("b.test", "MX"): [rr("MX", "10 mx.b.test.")],
    ("mx.b.test", "A"): [rr("A", "127.0.0.2")],
    ("multi.test", "MX"): [rr("MX", "20 backup.multi.test."), rr("MX", "10 one.multi.test."),
                           rr("MX", "10 two.multi.test.")],
    ("one.multi.test", "A"): [rr("A", "192.0.2.1")],
    ("two.multi.test", "A"): [rr("A", "192.0.2.2")],
    ("two.multi.test", "AAAA"): [rr("AAAA", "2001:db8::2")],
    ("backup.multi.test", "A"): [rr("A", "192.0.2.3")],
    ("nullmx.test", "MX"): [rr("MX", "0 .")],
    ("aonly.test", "A"): [rr("A", "192.0.2.9")],
    ("nx.test", "MX"): NX,
    ("servfail.test", "MX"): SERVFAIL,
    ("slow.test", "MX"): TIMEOUT,
    ("self.test", "MX"): [rr("MX", "10 me.test."), rr("MX", "20 other.test.")],
    ("selfbehind.test", "MX"): [rr("MX", "10 other.test."), rr("MX", "20 me.test.")],
    ("byname.test", "MX"): [rr("MX", "10 mx.test.example."), rr("MX", "20 other.test.")],
    ("me.test", "A"): [rr("A", "10.9.9.9")],
    ("other.test", "A"): [rr("A", "192.0.2.50")],
    ("badmx.test", "MX"): [rr("MX", "10 missing.test."), rr("MX", "20 other.test.")],
    ("allbad.test", "MX"): [rr("MX", "10 missing.test.")],
    ("flaky.test", "MX"): [rr("MX", "10 flakyhost.test.")],
    ("flakyhost.test", "A"): SERVFAIL,
    ("missing.test", "A"): NX,
    ("missing.test", "AAAA"): NX,
}


class FakeResolver:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def resolve(self, name: str, rdtype: str, search: bool = False) -> list[Any]:
        self.asked.append((name, rdtype))
        found = ZONE.get((name.rstrip("."), rdtype))
        if isinstance(found, Exception):
            raise found
        if found is None:
            if any(key[0] == name for key in ZONE):
                raise dns.resolver.NoAnswer()
            raise dns.resolver.NXDOMAIN()
        return found


def resolve(nexthop: str, *, seed: int = 1, families: tuple[str, ...] = ("A", "AAAA"),
            own: set[str] | None = None) -> list[Target]:
    dr = DestinationResolver(
        resolver=FakeResolver(), myhostname="mx.test.example",  # type: ignore[arg-type]
        own_addresses={ipaddress.ip_address(a) for a in (own or {"10.9.9.9"})},
        families=families, rng=random.Random(seed))
    return asyncio.run(asyncio.wait_for(dr.targets(nexthop, 25), 10))


def failure(nexthop: str) -> DeliveryFailure:
    with pytest.raises(DeliveryFailure) as info:
        resolve(nexthop)
    return info.value


def test_mx_lookup_gives_the_mx_host_address() -> None:
    assert resolve("b.test") == [Target("mx.b.test", "127.0.0.2", 25, 10)]
    assert resolve("b.test:2525")[0].relay == "mx.b.test[127.0.0.2]:2525"


def test_preference_order_with_random_ties() -> None:
    orders = set()
    for seed in range(20):
        targets = resolve("multi.test", seed=seed)
        assert [t.preference for t in targets] == [10, 10, 10, 20]
        assert targets[-1].host == "backup.multi.test"
        orders.add(tuple(dict.fromkeys(t.host for t in targets[:3])))
    assert orders == {("one.multi.test", "two.multi.test"), ("two.multi.test", "one.multi.test")}


def test_address_families() -> None:
    hosts = {t.address for t in resolve("multi.test", families=("A",))}
    assert "2001:db8::2" not in hosts
    assert {t.address for t in resolve("multi.test", families=("AAAA",))} == {"2001:db8::2"}
    assert families_for(["all"]) == ("A", "AAAA")
    assert families_for(["ipv4"]) == ("A",)
    assert families_for(["ipv6"]) == ("AAAA",)


def test_no_mx_falls_back_to_the_domain_address() -> None:
    assert resolve("aonly.test") == [Target("aonly.test", "192.0.2.9", 25, 0)]


@pytest.mark.parametrize("nexthop, dsn, text", [
    ("nullmx.test", "5.1.10", "Domain nullmx.test does not accept mail (nullMX)"),
    ("nx.test", "5.1.2", "Host or domain name not found. Name service error for name=nx.test "
                         "type=MX: Host not found"),
    ("servfail.test", "4.4.3", "Host or domain name not found. Name service error for "
                               "name=servfail.test type=MX: Host not found, try again"),
    ("slow.test", "4.4.3", "name=slow.test type=MX: Host not found, try again"),
    ("self.test", "5.4.6", "mail for self.test loops back to myself"),
    ("allbad.test", "5.4.4", "name=missing.test type=A: Host not found"),
    ("flaky.test", "4.4.3", "name=flakyhost.test type=A: Host not found, try again"),
    ("[missing.test]", "5.4.4", "name=missing.test type=A: Host not found"),
])
def test_lookup_failures(nexthop: str, dsn: str, text: str) -> None:
    exc = failure(nexthop)
    assert exc.dsn == dsn
    assert text in exc.text
    assert not exc.next_host


def test_loop_check_keeps_more_preferred_hosts() -> None:
    assert [t.host for t in resolve("selfbehind.test")] == ["other.test"]
    # an MX host that has our own name counts as us, whatever its address
    assert failure("byname.test").dsn == "5.4.6"


def test_unusable_mx_host_is_skipped() -> None:
    assert [t.host for t in resolve("badmx.test")] == ["other.test"]


def test_bracketed_nexthop_skips_mx() -> None:
    fake = FakeResolver()
    dr = DestinationResolver(resolver=fake)  # type: ignore[arg-type]
    targets = asyncio.run(dr.targets("[mx.b.test]:2526", 25))
    assert targets == [Target("mx.b.test", "127.0.0.2", 2526, 0)]
    assert all(rdtype != "MX" for _, rdtype in fake.asked)
    # literals need no lookup at all, and are never a loop (explicitly asked for)
    assert asyncio.run(dr.targets("[10.9.9.9]:25", 25)) == [Target("10.9.9.9", "10.9.9.9", 25, 0)]
    assert not [q for q in fake.asked if q[0] == "10.9.9.9"]


def test_list_of_nexthops_in_order() -> None:
    targets = resolve("[192.0.2.7]:1, b.test")
    assert [t.address for t in targets] == ["192.0.2.7", "127.0.0.2"]
    # one bad entry does not spoil the others
    assert [t.address for t in resolve("nx.test b.test")] == ["127.0.0.2"]


def test_make_resolver_with_address() -> None:
    r = make_resolver("127.0.0.1:5353", 3)
    assert r.nameservers == ["127.0.0.1"] and r.port == 5353 and r.lifetime == 3
    r6 = make_resolver("[::1]:5300", 3)
    assert r6.nameservers == ["::1"] and r6.port == 5300
    assert make_resolver("192.0.2.53", 3).port == 53


def test_own_addresses_from_inet_interfaces() -> None:
    from postpy.smtp.localaddrs import interface_addresses, own_addresses

    loopback = ipaddress.ip_address("127.0.0.1")
    assert loopback in interface_addresses()
    assert loopback in own_addresses(["all"])
    assert own_addresses(["loopback-only"]) == {loopback, ipaddress.ip_address("::1")}
    assert own_addresses(["192.0.2.1", "[2001:db8::1]"]) == {
        ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")}
    assert loopback in own_addresses(["localhost"])
    assert own_addresses(["no-such-host.invalid"]) == set()
