"""Per-destination TLS policy (postpy.smtp.tls_policy) and the peer checks of postpy.smtp.tls."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest
from test_smtp_peer import Peer, Script, peer_cert, server_context  # noqa: F401

from postpy.smtp.client import Session
from postpy.smtp.dns import Target
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.message import OutMessage, OutRcpt
from postpy.smtp.settings import ClientSettings
from postpy.smtp.tls import (
    ContextFactory,
    TlsConfigError,
    fingerprints,
    name_matches,
    parse_protocols,
    public_key_der,
)
from postpy.smtp.tls_policy import (
    PolicyDefaults,
    PolicyError,
    PolicyTable,
    parse_value,
    policy_keys,
)


def test_policy_keys() -> None:
    assert policy_keys("[Relay.Example]:587") == (["[relay.example]:587", "[relay.example]"], "relay.example")
    assert policy_keys("[relay.example]") == (["[relay.example]"], "relay.example")
    assert policy_keys("mail.example.com") == (
        ["mail.example.com", ".example.com", ".com"], "mail.example.com")
    assert policy_keys("example.com:2525")[0] == ["example.com:2525", "example.com", ".com"]


def test_parse_value() -> None:
    assert parse_value("fingerprint match=AB:CD|EF:01 match=12:34") == (
        "fingerprint", {"match": ["AB:CD|EF:01", "12:34"]})
    assert parse_value("Secure match=.example.com ciphers=high protocols=>=TLSv1.2")[0] == "secure"
    for bad in ("", "verify match", "verify colour=blue"):
        with pytest.raises(PolicyError):
            parse_value(bad)


@pytest.mark.parametrize("text, want", [
    (">=TLSv1", (2, 5)), (">=TLSv1.2", (4, 5)), ("<=TLSv1.2", (2, 4)),
    ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", (4, 5)), ("!SSLv2:!SSLv3:!TLSv1.3", (2, 4)),
    ("TLSv1.2 TLSv1.3", (4, 5)), (">=TLSv1.2, <=TLSv1.2", (4, 4)),
])
def test_protocols(text: str, want: tuple[int, int]) -> None:
    assert parse_protocols(text) == want


def test_bad_protocols() -> None:
    for text in ("TLSv9", ">=TLSv1.3, <=TLSv1.2"):
        with pytest.raises(TlsConfigError):
            parse_protocols(text)


def test_name_matching() -> None:
    dns, ips = ["mx.example.com", "*.mail.example.net"], ["127.0.0.1"]
    assert name_matches(["mx.example.com"], dns, ips)
    assert name_matches([".example.com"], dns, ips)
    assert not name_matches([".mx.example.com"], dns, ips)
    assert name_matches(["a.mail.example.net"], dns, ips)
    assert not name_matches(["a.b.mail.example.net"], dns, ips)
    assert name_matches(["127.0.0.1"], dns, ips) and not name_matches(["127.0.0.2"], dns, ips)
    assert not name_matches(["example.com"], dns, ips)


def table(tmp_path: Path, entries: str, level: str = "may") -> PolicyTable:
    path = tmp_path / "tls_policy"
    path.write_text(entries)
    return PolicyTable(PolicyDefaults(level=level), [f"texthash:{path}"], ContextFactory())


def test_table_lookup_and_errors(tmp_path: Path) -> None:
    t = table(tmp_path, "[a.example]:587 encrypt\n.example.org verify match=hostname:nexthop\n"
                        "bad.example bogus-level\nfp.example fingerprint\n"
                        "proto.example encrypt protocols=TLSv7\n")
    assert t.for_nexthop("[a.example]:587")[0].level == "encrypt"
    assert t.for_nexthop("[a.example]:25")[0].level == "may"
    policy, domain = t.for_nexthop("mx.example.org")
    assert (policy.level, policy.match, domain) == ("verify", ("hostname", "nexthop"), "mx.example.org")
    assert t.for_nexthop("example.org")[0].level == "may"     # .parent is for subdomains
    for hop in ("bad.example", "fp.example", "proto.example"):
        with pytest.raises(DeliveryFailure) as info:
            t.for_nexthop(hop)
        assert info.value.dsn == "4.7.5" and info.value.status == "deferred"
        assert f"malformed policy for {hop}" in info.value.text


def test_dane_is_accepted_as_may_and_encrypt(tmp_path: Path) -> None:
    t = table(tmp_path, "d.example dane\ndo.example dane-only\n")
    assert t.for_nexthop("d.example")[0].required is False
    assert t.for_nexthop("do.example")[0].required is True


def test_public_key_fingerprint(peer_cert: tuple[Path, Path]) -> None:  # noqa: F811
    der = ssl.PEM_cert_to_DER_cert(peer_cert[0].read_text())
    cert_fp, key_fp = fingerprints(der)
    assert cert_fp.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    pkey = public_key_der(der)
    assert pkey is not None and pkey[0] == 0x30 and len(pkey) > 200 and key_fp


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def attempt(t: PolicyTable, nexthop: str, script: Script, host: str = "127.0.0.1") -> Any:
    async def go() -> Any:
        async with Peer(script) as peer:
            policy, domain = t.for_nexthop(nexthop)
            cs = ClientSettings(helo_name="c.example", myhostname="c.example", tls=t.default)
            msg = OutMessage("a@b.example", [OutRcpt("c@d.example")], 3, lambda: [b"x\n"])
            try:
                session = await Session.open(Target(host, "127.0.0.1", peer.port), cs, nexthop,
                                             policy=policy, domain=domain)
                out = await session.send_message(msg)
                await session.quit()
                return out[0].status
            except DeliveryFailure as exc:
                return exc.text
    return run(go())


def test_fingerprint_and_secure_levels_against_a_peer(peer_cert: tuple[Path, Path],  # noqa: F811
                                                      tmp_path: Path) -> None:
    cert, key = peer_cert
    fp = fingerprints(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    entries = (f"[127.0.0.1]:1 fingerprint match=00:11|{fp[0]}\n"
               f"[127.0.0.1]:2 fingerprint match={fp[1]}\n"
               f"[127.0.0.1]:3 fingerprint match=AA:BB:CC\n"
               f"[localhost]:4 secure\n"
               f"[127.0.0.1]:5 secure match=localhost\n"
               f"[127.0.0.1]:6 secure match=other.example\n")
    path = tmp_path / "p"
    path.write_text(entries)
    t = PolicyTable(PolicyDefaults(), [f"texthash:{path}"], ContextFactory(str(cert)).load())
    script = Script(tls=server_context(cert, key))
    assert attempt(t, "[127.0.0.1]:1", script) == "sent"
    assert attempt(t, "[127.0.0.1]:2", script) == "sent"                 # public-key fingerprint
    assert attempt(t, "[127.0.0.1]:3", script) == "Server certificate not verified"
    assert attempt(t, "[localhost]:4", script, host="localhost") == "sent"  # nexthop localhost
    assert attempt(t, "[127.0.0.1]:5", script) == "sent"
    assert attempt(t, "[127.0.0.1]:6", script) == "Server certificate not verified"
