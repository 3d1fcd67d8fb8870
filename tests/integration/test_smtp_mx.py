"""MX lookups against a real DNS server (dnsmasq on loopback), directly and through a
running postpy that delivers by MX (dns_resolver_address points at the test server)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import smtplib

import pytest
from dnsserver import DnsServer, dns_server, skip_without_dnsmasq  # noqa: F401
from smtppeers import SMTP_SINK, SmtpSink

from postpy.smtp.dns import DestinationResolver, Target, make_resolver
from postpy.smtp.failure import DeliveryFailure

pytestmark = skip_without_dnsmasq


def lookup(server: DnsServer, nexthop: str, seed: int = 0) -> list[Target] | DeliveryFailure:
    dr = DestinationResolver(resolver=make_resolver(server.address, 5), myhostname="mx.test.example",
                             own_addresses={ipaddress.ip_address("127.0.0.1")}, families=("A", "AAAA"),
                             rng=random.Random(seed))
    try:
        return asyncio.run(asyncio.wait_for(dr.targets(nexthop, 25), 20))
    except DeliveryFailure as exc:
        return exc


def test_mx_and_fallbacks(dns_server: DnsServer) -> None:  # noqa: F811
    assert lookup(dns_server, "b.test") == [Target("mx.b.test", "127.0.0.2", 25, 10)]
    assert lookup(dns_server, "aonly.test") == [Target("aonly.test", "127.0.0.3", 25, 0)]
    assert lookup(dns_server, "[mx.b.test]:2525") == [Target("mx.b.test", "127.0.0.2", 2525, 0)]
    firsts = set()
    for seed in range(16):
        found = lookup(dns_server, "multi.test", seed)
        assert isinstance(found, list)
        assert [t.preference for t in found] == [10, 10, 20]
        firsts.add(found[0].host)
    assert firsts == {"one.multi.test", "two.multi.test"}   # random among equal preferences
    assert [t.host for t in lookup(dns_server, "loopbehind.test")] == ["other.loopbehind.test"]  # type: ignore[union-attr]


@pytest.mark.parametrize("nexthop, dsn, text", [
    ("nullmx.test", "5.1.10", "Domain nullmx.test does not accept mail (nullMX)"),
    ("nx.test", "5.1.2", "Host or domain name not found. Name service error for name=nx.test type=MX: "
                         "Host not found"),
    ("servfail.test", "4.4.3", "Host or domain name not found. Name service error for name=servfail.test "
                               "type=MX: Host not found, try again"),
    ("loop.test", "5.4.6", "mail for loop.test loops back to myself"),
])
def test_failures(dns_server: DnsServer, nexthop: str, dsn: str, text: str) -> None:  # noqa: F811
    found = lookup(dns_server, nexthop)
    assert isinstance(found, DeliveryFailure)
    assert (found.dsn, found.text) == (dsn, text)


def submit(mta, rcpts: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail("sender@test.example", rcpts, b"Subject: by MX\r\n\r\nhello\r\n")
    return mta.wait_log(rf"(\w+): from=<sender@test.example>, size=\d+, nrcpt={len(rcpts)}", 20).group(1)


@pytest.mark.skipif(SMTP_SINK is None, reason="smtp-sink is not installed")
def test_postpy_delivers_by_mx_and_reports_dns_failures(mta_factory) -> None:
    server = DnsServer(extra=["mx-host=sink.test,mx.sink.test,10", "host-record=mx.sink.test,127.0.0.2"])
    try:
        with SmtpSink(host="127.0.0.2") as sink:
            mta = mta_factory(dns_resolver_address=server.address, smtp_tcp_port=str(sink.port))
            rcpts = ["a@sink.test", "b@nullmx.test", "c@nx.test", "d@servfail.test", "e@loop.test"]
            queue_id = submit(mta, rcpts)
            mta.wait_log(rf"{queue_id}: to=<a@sink.test>, relay=mx.sink.test\[127.0.0.2\]:{sink.port}, "
                         r".*dsn=2.0.0, status=sent \(250 ", 20)
            expected = [
                ("b@nullmx.test", r"dsn=5.1.10, status=bounced \(Domain nullmx.test does not accept mail \(nullMX\)\)"),
                ("c@nx.test", r"dsn=5.1.2, status=bounced \(Host or domain name not found. Name service "
                              r"error for name=nx.test type=MX: Host not found\)"),
                ("d@servfail.test", r"dsn=4.4.3, status=deferred \(Host or domain name not found. Name "
                                    r"service error for name=servfail.test type=MX: Host not found, try again\)"),
                ("e@loop.test", r"dsn=5.4.6, status=bounced \(mail for loop.test loops back to myself\)"),
            ]
            for rcpt, tail in expected:
                mta.wait_log(rf"{queue_id}: to=<{rcpt}>, relay=none, delay=\S+, delays=\S+, {tail}", 20)
            assert len(sink.messages()) == 1
    finally:
        server.stop()
