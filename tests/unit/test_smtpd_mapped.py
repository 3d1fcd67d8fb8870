"""smtpd's RCPT check for mapped recipients and virtual alias domains (smtpd.mapped via smtpd.relay)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.smtpd.mapped import MappedRecipients
from postpy.smtpd.relay import Recipient, RelayPolicy
from postpy.smtpd.settings import Settings
from postpy.tables.address_map import AddressMap
from postpy.tables.maps import clear_cache

VIRTUAL = "inline:{v.test=domain, a@v.test=b@example.org, @w.test=c@example.org, {fwd@test.example=x@y.example}}"
CANONICAL = "inline:{old@elsewhere.example=new@elsewhere.example}"


@pytest.fixture(autouse=True)
def fresh_tables() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def is_local(domain: str) -> bool:
    return domain in ("test.example", "localhost")


def policy(**kw: object) -> RelayPolicy:
    maps = [AddressMap("canonical_maps", [CANONICAL], is_local=is_local),
            AddressMap("virtual_alias_maps", [VIRTUAL], is_local=is_local, delimiter="+")]
    base: dict[str, object] = {
        "mydestination": frozenset({"test.example", "localhost"}),
        "relay_domains": (),
        "relay_restrictions": ["permit_mynetworks", "reject_unauth_destination"],
        "recipient_restrictions": [],
        "local_recipient_maps": ["inline:{alice=x, postmaster=x}"],
        "recipient_delimiter": "+",
        "own_addresses": frozenset({ipaddress.ip_address("127.0.0.1")}),
        "mapped": MappedRecipients(maps, ["v.test", "inline:{.sub.v.test=x}"]),
    }
    base.update(kw)
    return RelayPolicy(**base)  # type: ignore[arg-type]


def rcpt(written: str, trusted: bool = False) -> Recipient:
    return Recipient(written, written, "192.0.2.9", trusted=trusted)


UNKNOWN = "5.1.1 <{}>: Recipient address rejected: User unknown in virtual alias table"


@pytest.mark.parametrize(("written", "trusted", "code", "text"), [
    ("a@v.test", False, None, ""),                             # mapped: accepted from anyone
    ("A+ext@V.test", False, None, ""),                          # keys fold, extension stripped
    ("nobody@v.test", False, 550, UNKNOWN),                     # unknown in a virtual alias domain
    ("nobody@v.test", True, 550, UNKNOWN),
    ("x@a.sub.v.test", False, 550, UNKNOWN),                    # a table pattern's subdomain
    ("anyone@w.test", True, None, ""),                          # catch-all of a domain that is no alias domain
    ("anyone@w.test", False, 554, "5.7.1 <anyone@w.test>: Relay access denied"),
    ("fwd@test.example", False, None, ""),                     # local, not a user, but mapped
    ("nobody@test.example", False, 550,
     "5.1.1 <nobody@test.example>: Recipient address rejected: User unknown in local recipient table"),
    ("old@elsewhere.example", True, None, ""),                  # canonical entry: known
    ("x@elsewhere.example", True, None, ""),                    # relayed for mynetworks, as before
])
def test_rcpt(written: str, trusted: bool, code: int | None, text: str) -> None:
    reply = policy().check(rcpt(written, trusted))
    if code is None:
        assert reply is None
    else:
        assert reply is not None and reply.code == code
        assert reply.text == text.format(written)


def test_local_domain_is_never_an_alias_domain() -> None:
    mapped = MappedRecipients([], ["test.example"])
    reply = policy(mapped=mapped).check(rcpt("alice@test.example"))
    assert reply is None


def test_unlisted_check_off_accepts_unknown_alias_users() -> None:
    assert policy(reject_unlisted=False).check(rcpt("nobody@v.test")) is None


def test_table_failure_is_temporary(tmp_path: Path) -> None:
    broken = MappedRecipients([AddressMap("virtual_alias_maps", [f"lmdb:{tmp_path}/none"])], [])
    reply = policy(mapped=broken).check(rcpt("a@v.test", trusted=True))
    assert reply is not None and str(reply) == "451 4.3.0 <a@v.test>: Temporary lookup failure"
    broken = MappedRecipients([], [f"lmdb:{tmp_path}/none"])
    reply = policy(mapped=broken).check(rcpt("a@v.test"))
    assert reply is not None and reply.code == 451


def test_settings_default_alias_domains_come_from_the_maps(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.test.example", "inet_interfaces": "127.0.0.1",
                                          "virtual_alias_maps": VIRTUAL, "local_recipient_maps": ""})
    settings = Settings.from_config(cfg)
    assert settings.relay.mapped.alias_domains == [VIRTUAL]
    assert settings.relay.check(rcpt("a@v.test")) is None
    reply = settings.relay.check(rcpt("zz@v.test"))
    assert reply is not None and str(reply) == "550 " + UNKNOWN.format("zz@v.test")
    reply = settings.relay.check(rcpt("zz@w.test"))
    assert reply is not None and reply.code == 554
