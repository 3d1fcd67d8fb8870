"""Routing of virtual mailbox domains, local_transport next hops and relocated
users (postpy.qmgr.resolve), the tables behind them, missing master.cf services
(postpy.qmgr.services) and what sendmail -bv says about all of it (postpy.cli.verify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.cli.verify import verdict
from postpy.config.maincf import Config
from postpy.qmgr.resolve import Route, resolve
from postpy.qmgr.services import unavailable_reason
from postpy.smtpd.relay import in_relay_domains
from postpy.tables.addrfind import address_keys
from postpy.tables.domain_list import DomainList
from postpy.tables.maps import clear_cache

BASE = {"myhostname": "mx.test.example", "mydestination": "$myhostname, localhost, test.example",
        "inet_interfaces": "127.0.0.1"}
VIRTUAL = {"virtual_mailbox_domains": "v.test"}
LMTP = "lmtp:unix:private/dovecot-lmtp"
MOVED = {"relocated_maps": "inline:{ alice@v.test=alice@new.example, carol=carol@new.example, "
                           "@old.example=new.example, bob@test.example=bob@new.example }",
         "recipient_delimiter": "+"}


def config(tmp_path: Path, **params: str) -> Config:
    clear_cache()
    return Config(str(tmp_path), {**BASE, **params})


@pytest.mark.parametrize("params, address, expected", [
    # virtual mailbox domains go to virtual_transport (default "virtual", next hop the domain)
    (VIRTUAL, "bob@v.test", Route("virtual", "v.test")),
    ({**VIRTUAL, "virtual_transport": LMTP}, "Bob@V.Test", Route("lmtp", "unix:private/dovecot-lmtp")),
    ({**VIRTUAL, "virtual_transport": "dovecot"}, "bob@v.test", Route("dovecot", "v.test")),
    ({**VIRTUAL, "virtual_transport": "dovecot:"}, "bob@v.test", Route("dovecot", "v.test")),
    ({"virtual_mailbox_domains": "v.test, .v.test"}, "bob@sub.v.test", Route("virtual", "sub.v.test")),
    ({"virtual_mailbox_domains": ".v.test"}, "bob@v.test", Route("smtp", "v.test")),
    ({"virtual_mailbox_domains": "inline:{ v.test=x }"}, "bob@v.test", Route("virtual", "v.test")),
    # the default $virtual_mailbox_maps: a domain is in it when the table has the domain as a key
    ({"virtual_mailbox_maps": "inline:{ v.test=x, bob@w.test=x }"}, "bob@v.test", Route("virtual", "v.test")),
    ({"virtual_mailbox_maps": "inline:{ v.test=x, bob@w.test=x }"}, "bob@w.test", Route("smtp", "w.test")),
    # local first, as in Postfix; transport_maps override the class
    ({"virtual_mailbox_domains": "test.example"}, "bob@test.example", Route("local", "mx.test.example")),
    ({**VIRTUAL, "transport_maps": "inline:{ v.test=smtp:[10.0.0.1] }"}, "bob@v.test",
     Route("smtp", "[10.0.0.1]")),
    ({**VIRTUAL, "transport_maps": "inline:{ v.test=:[10.0.0.1] }"}, "bob@v.test",
     Route("virtual", "[10.0.0.1]")),
    ({**VIRTUAL, "relayhost": "[relay.example]"}, "bob@v.test", Route("virtual", "v.test")),
    # local_transport: its next hop, else the recipient's domain
    ({}, "bob@test.example", Route("local", "mx.test.example")),
    ({"local_transport": "local"}, "bob@test.example", Route("local", "test.example")),
    ({"local_transport": LMTP}, "bob@test.example", Route("lmtp", "unix:private/dovecot-lmtp")),
    ({"local_transport": "dovecot:"}, "bob@[127.0.0.1]", Route("dovecot", "[127.0.0.1]")),
    ({}, "bob@example.org", Route("smtp", "example.org")),
    # relocated_maps: user@domain, user (local domains and $myorigin), @domain; last, over all
    (MOVED, "alice@v.test", Route("error", "", "5.1.6 User has moved to alice@new.example")),
    (MOVED, "Alice+Tag@V.Test", Route("error", "", "5.1.6 User has moved to alice@new.example")),
    (MOVED, "carol@test.example", Route("error", "", "5.1.6 User has moved to carol@new.example")),
    (MOVED, "carol+x@localhost", Route("error", "", "5.1.6 User has moved to carol@new.example")),
    (MOVED, "carol@example.org", Route("smtp", "example.org")),
    ({**MOVED, "myorigin": "origin.example"}, "carol@origin.example",
     Route("error", "", "5.1.6 User has moved to carol@new.example")),
    (MOVED, "anyone@old.example", Route("error", "", "5.1.6 User has moved to new.example")),
    ({**MOVED, "transport_maps": "inline:{ test.example=smtp:[10.0.0.1] }"}, "bob@test.example",
     Route("error", "", "5.1.6 User has moved to bob@new.example")),
    ({**MOVED, "transport_maps": "inline:{ test.example=smtp:[10.0.0.1] }"}, "dave@test.example",
     Route("smtp", "[10.0.0.1]")),
])
def test_routes(tmp_path: Path, params: dict[str, str], address: str, expected: Route) -> None:
    assert resolve(config(tmp_path, **params), address) == expected


@pytest.mark.parametrize("param", ["virtual_mailbox_domains", "relocated_maps"])
def test_unreadable_tables_defer(tmp_path: Path, param: str) -> None:
    route = resolve(config(tmp_path, **{param: f"lmdb:{tmp_path}/missing"}), "bob@v.test")
    assert route.retry and route.error.startswith(f"4.3.0 {param} lookup failure: ")


@pytest.mark.parametrize("address, delimiter, local, keys", [
    ("Bob@V.Test", "", False, ["bob@v.test", "@v.test"]),
    ("bob+x@v.test", "+", False, ["bob+x@v.test", "bob@v.test", "@v.test"]),
    ("bob-x@v.test", "+-", True, ["bob-x@v.test", "bob@v.test", "bob-x", "bob", "@v.test"]),
    ("+bob@v.test", "+", False, ["+bob@v.test", "@v.test"]),
    ('"b b"@v.test', "", True, ["b b@v.test", "b b", "@v.test"]),
    ("bob", "+", False, ["bob"]),
])
def test_address_keys(address: str, delimiter: str, local: bool, keys: list[str]) -> None:
    assert address_keys(address, delimiter, local) == keys


@pytest.mark.parametrize("entries, domain, match", [
    (["v.test"], "V.Test.", True),
    (["v.test"], "sub.v.test", False),
    ([".v.test"], "a.sub.v.test", True),
    (["inline:{ .v.test=x }"], "sub.v.test", True),
    (["inline:{ .v.test=x }"], "v.test", False),
    (["other.test", "inline:{ v.test=x }"], "v.test", True),
    (["v.test"], "[127.0.0.1]", False),
    ([], "v.test", False),
])
def test_domain_list(entries: list[str], domain: str, match: bool) -> None:
    clear_cache()
    assert DomainList.parse(entries).matches(domain) is match


def test_relay_domains_match_subdomains() -> None:
    assert in_relay_domains(["relay.example"], "a.relay.example")
    assert in_relay_domains([".relay.example"], "relay.example")
    assert not in_relay_domains(["relay.example"], "xrelay.example")


def test_unavailable_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert unavailable_reason(cfg, "virtual", {"local", "smtp"}) == \
        'no "virtual" service in master.cf (named by virtual_transport = virtual)'
    assert unavailable_reason(cfg, "smtp", {"local", "smtp"}) is None
    assert "named by transport_maps" in (unavailable_reason(cfg, "typo", {"smtp"}) or "")


@pytest.mark.parametrize("params, address, text, ok", [
    (VIRTUAL, "bob@v.test", 'deferred: 4.3.0 mail transport unavailable: no "virtual" service in '
                            "master.cf (named by virtual_transport = virtual)", False),
    ({**VIRTUAL, "virtual_transport": LMTP}, "bob@v.test",
     "deliverable via lmtp to unix:private/dovecot-lmtp", True),
    ({**VIRTUAL, "virtual_transport": LMTP, "virtual_mailbox_maps": "inline:{ bob@v.test=x }"},
     "nobody@v.test", "undeliverable: 5.1.1 User unknown in virtual mailbox table", False),
    ({"relay_domains": "relay.example", "relay_recipient_maps": "inline:{ ok@relay.example=x }"},
     "no@relay.example", "undeliverable: 5.1.1 User unknown in relay recipient table", False),
    ({"relay_domains": "relay.example", "relay_recipient_maps": "inline:{ ok@relay.example=x }"},
     "ok@relay.example", "deliverable via smtp to relay.example", True),
    (MOVED, "alice@v.test", "undeliverable: 5.1.6 User has moved to alice@new.example", False),
    ({"local_recipient_maps": "inline:{ bob=x }"}, "nobody@test.example",
     "undeliverable: 5.1.1 User unknown in local recipient table", False),
    ({"local_recipient_maps": "inline:{ bob=x }", "fallback_transport": LMTP}, "nobody@test.example",
     f"deliverable via local to mx.test.example, then via {LMTP} (fallback_transport)", True),
    ({"local_recipient_maps": "inline:{ bob=x }", "fallback_transport": LMTP}, "bob@test.example",
     "deliverable via local to mx.test.example", True),
    ({"local_recipient_maps": "inline:{ bob=x }", "mailbox_transport": "dovecot"}, "bob@test.example",
     'deferred: 4.3.0 mail transport unavailable: no "dovecot" service in master.cf '
     "(named by mailbox_transport = dovecot)", False),
])
def test_sendmail_bv_verdict(tmp_path: Path, params: dict[str, str], address: str, text: str,
                             ok: bool) -> None:
    (tmp_path / "master.cf").write_text("local unix - n n - - local\nsmtp unix - - n - - smtp\n"
                                        "lmtp unix - - n - - lmtp\n")
    cfg = config(tmp_path, **params)
    known = params.get("local_recipient_maps", "").find(address.partition("@")[0] + "=") > 0
    assert verdict(cfg, address, resolve(cfg, address), lambda: known) == (text, ok)
