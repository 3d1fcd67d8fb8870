"""mynetworks matching, relay restrictions, relay tricks, local recipients."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.mail.address import parse_path
from postpy.smtpd.relay import NetworkList, Recipient, RelayConfigError, RelayPolicy, parse_ip
from postpy.smtpd.settings import Settings, SettingsError


@pytest.mark.parametrize(("words", "addr", "match"), [
    (["127.0.0.0/8"], "127.0.0.1", True),
    (["127.0.0.0/8"], "127.1.2.3", True),
    (["127.0.0.1/32"], "127.0.0.2", False),
    (["10.0.0.1"], "10.0.0.1", True),
    (["[::1]/128"], "::1", True),
    (["[::1]"], "::1", True),
    (["2001:db8::/32"], "2001:db8:1::5", True),
    (["[2001:db8::]/32"], "2001:db9::5", False),
    (["127.0.0.0/8"], "::ffff:127.0.0.1", True),
    (["!127.0.0.2", "127.0.0.0/8"], "127.0.0.2", False),
    (["!127.0.0.2", "127.0.0.0/8"], "127.0.0.3", True),
    (["127.0.0.0/8"], "not-an-ip", False),
    ([], "127.0.0.1", False),
])
def test_network_list(words: list[str], addr: str, match: bool) -> None:
    nets, warnings = NetworkList.parse(words)
    assert not warnings
    assert nets.matches(addr) == match


def test_network_list_warns_on_tables() -> None:
    nets, warnings = NetworkList.parse(["hash:/etc/postfix/network", "example.org", "10.0.0.0/8"])
    assert len(warnings) == 2 and "hash:/etc/postfix/network" in warnings[0]
    assert nets.matches("10.1.1.1")


def test_parse_ip_drops_zone_and_mapping() -> None:
    assert str(parse_ip("fe80::1%eth0")) == "fe80::1"
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_ip("") is None


def policy(**kw: object) -> RelayPolicy:
    base: dict[str, object] = {
        "mydestination": frozenset({"test.example", "localhost"}),
        "relay_domains": ("relay.example",),
        "relay_restrictions": ["permit_mynetworks", "reject_unauth_destination"],
        "recipient_restrictions": [],
        "local_recipient_maps": ["inline:{alice=x, bob=x, postmaster=x}"],
        "recipient_delimiter": "+",
        "own_addresses": frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}),
    }
    base.update(kw)
    return RelayPolicy(**base)  # type: ignore[arg-type]


def rcpt(written: str, trusted: bool = False, server: str = "127.0.0.1") -> Recipient:
    return Recipient(written=written, address=parse_path(written, utf8=True),
                     client_addr="127.0.0.2", server_addr=server, trusted=trusted)


RELAY_DENIED = 554
UNKNOWN = 550

# (recipient as written, trusted client, expected reply code or None for accepted)
CHECKS = [
    ("alice@test.example", False, None),
    ("ALICE@Test.Example", False, None),
    ("alice+tag@test.example", False, None),
    ("alice@localhost", False, None),
    ("postmaster", False, None),
    ("nobody@test.example", False, UNKNOWN),
    ("nobody+alice@test.example", False, UNKNOWN),
    ("x@elsewhere.example", False, RELAY_DENIED),
    ("x@elsewhere.example", True, None),
    ("x@relay.example", False, None),
    ("x@sub.relay.example", False, None),
    ("x@notrelay.example", False, RELAY_DENIED),
    # relay tricks, untrusted client
    ("alice%elsewhere.example@test.example", False, RELAY_DENIED),
    ("elsewhere.example!alice@test.example", False, RELAY_DENIED),
    ('"alice@elsewhere.example"@test.example', False, RELAY_DENIED),
    ("@test.example:x@elsewhere.example", False, RELAY_DENIED),
    ("@elsewhere.example:alice@test.example", False, None),
    ("user%other@relay.example", False, RELAY_DENIED),
    ("elsewhere!alice", False, RELAY_DENIED),
    # the same from a trusted client: not relayed, but unknown locally
    ("alice%elsewhere.example@test.example", True, UNKNOWN),
    ('"alice@elsewhere.example"@test.example', True, UNKNOWN),
    # address literals: ours is local, others are not
    ("alice@[127.0.0.1]", False, None),
    ("alice@[IPv6:::1]", False, None),
    ("nobody@[127.0.0.1]", False, UNKNOWN),
    ("alice@[192.0.2.1]", False, RELAY_DENIED),
    ("alice@[127.0.0.2]", False, RELAY_DENIED),
    ("alice@[127.0.0.2]", True, None),
]


@pytest.mark.parametrize(("domain", "local"), [
    ("", True), ("test.example", True), ("TEST.example.", True), ("other.example", False),
    ("[127.0.0.1]", True), ("[IPv6:::1]", True), ("[127.0.0.2]", False), ("[10.0.0.1]", True),
    ("[bad]", False),
])
def test_smtpd_and_qmgr_agree_on_local(tmp_path: Path, domain: str, local: bool) -> None:
    """One definition: what smtpd accepts as local, qmgr routes to local."""
    from postpy.qmgr.resolve import is_local_domain, resolve

    cfg = Config(str(tmp_path), {"mydestination": "test.example, localhost",
                                 "inet_interfaces": "127.0.0.1, ::1", "proxy_interfaces": "10.0.0.1"})
    settings = Settings.from_config(cfg)
    assert settings.relay.is_local_domain(domain) == local
    assert is_local_domain(cfg, domain) == local
    route = resolve(cfg, f"alice@{domain}" if domain else "alice")
    assert route.transport == ("local" if local else "smtp")
    if not local:
        assert route.nexthop == domain.lower() or route.nexthop == domain


@pytest.mark.parametrize(("written", "trusted", "code"), CHECKS)
def test_relay_checks(written: str, trusted: bool, code: int | None) -> None:
    verdict = policy().check(rcpt(written, trusted))
    assert (verdict.code if verdict else None) == code, verdict


def test_relay_denied_text() -> None:
    verdict = policy().check(rcpt("x@elsewhere.example"))
    assert str(verdict) == "554 5.7.1 <x@elsewhere.example>: Relay access denied"


def test_user_unknown_text() -> None:
    verdict = policy().check(rcpt("nobody@test.example"))
    assert str(verdict) == ("550 5.1.1 <nobody@test.example>: Recipient address rejected: "
                            "User unknown in local recipient table")


def test_untrusted_routing_allowed() -> None:
    p = policy(allow_untrusted_routing=True, local_recipient_maps=[])
    assert p.check(rcpt("a%b@test.example")) is None


def test_empty_local_recipient_maps_accepts_all() -> None:
    assert policy(local_recipient_maps=[]).check(rcpt("anyone@test.example")) is None


def test_unlisted_check_can_be_disabled() -> None:
    assert policy(reject_unlisted=False).check(rcpt("anyone@test.example")) is None


@pytest.mark.parametrize(("relay", "recipient", "written", "code"), [
    (["reject"], [], "alice@test.example", 554),
    (["permit"], ["reject_unauth_destination"], "x@elsewhere.example", 554),
    ([], ["permit_mynetworks", "reject_unauth_destination"], "x@elsewhere.example", 554),
    (["defer_unauth_destination"], [], "x@elsewhere.example", 450),
    (["permit_sasl_authenticated", "reject_unauth_destination"], [], "x@elsewhere.example", 554),
    (["reject_unlisted_recipient", "permit"], ["reject_unauth_destination"], "nobody@test.example", 550),
    (["bogus_restriction", "reject_unauth_destination"], [], "alice@test.example", 451),
    (["reject_unknown_recipient_domain", "reject_unauth_destination"], [], "alice@test.example", None),
])
def test_restriction_lists(relay: list[str], recipient: list[str], written: str,
                           code: int | None) -> None:
    verdict = policy(relay_restrictions=relay, recipient_restrictions=recipient).check(rcpt(written))
    assert (verdict.code if verdict else None) == code


def test_open_relay_configuration_is_refused() -> None:
    with pytest.raises(RelayConfigError):
        policy(relay_restrictions=["permit_mynetworks"], recipient_restrictions=[]).check_config()


def test_lookup_keys() -> None:
    assert policy().lookup_keys("user+ext", "test.example") == [
        "user+ext@test.example", "user+ext", "user@test.example", "user", "@test.example"]
    assert policy(recipient_delimiter="").lookup_keys("a+b", "") == ["a+b"]


def test_table_failure_is_temporary(tmp_path: Path) -> None:
    p = policy(local_recipient_maps=[f"lmdb:{tmp_path}/missing"])
    verdict = p.check(rcpt("alice@test.example"))
    assert verdict is not None and str(verdict) == "451 4.3.0 <alice@test.example>: Temporary lookup failure"


def test_passwd_lookup() -> None:
    p = policy(local_recipient_maps=["unix:passwd.byname"])
    assert p.check(rcpt("root@test.example")) is None
    assert p.check(rcpt("Root@test.example")) is None
    verdict = p.check(rcpt("no-such-user-here@test.example"))
    assert verdict is not None and verdict.code == 550


def test_settings_from_config(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={
        "myhostname": "mx.example", "mynetworks": "10.0.0.0/8 [::1]/128",
        "mydestination": "$myhostname, Example.ORG", "smtpd_forbid_bare_newline": "yes"})
    s = Settings.from_config(cfg)
    assert s.relay.mydestination == frozenset({"mx.example", "example.org"})
    assert s.mynetworks.matches("10.1.1.1") and s.mynetworks.matches("::1")
    assert s.bare_newline == "reject"
    assert s.tls_context is None and s.tls_level == "none"
    assert s.banner == "mx.example ESMTP postpy"


@pytest.mark.parametrize("params", [
    {"smtpd_forbid_bare_newline": "maybe"},
    {"smtpd_tls_security_level": "dane"},
    {"smtpd_relay_restrictions": "permit_mynetworks", "smtpd_recipient_restrictions": ""},
    {"smtpd_tls_cert_file": "/nonexistent/cert.pem"},
    {"smtpd_timeout": "soon"},
])
def test_bad_settings(tmp_path: Path, params: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_config(Config(str(tmp_path), explicit=params))
