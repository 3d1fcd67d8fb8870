"""smtpd's RCPT checks of virtual mailbox domains, relay recipients and relocated
users (postpy.smtpd.recipients), through the relay policy as smtpd runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.mail.address import parse_path
from postpy.smtpd.relay import Recipient
from postpy.smtpd.settings import Settings
from postpy.tables.maps import clear_cache

BASE = {
    "myhostname": "mx.test.example", "mydestination": "$myhostname, localhost, test.example",
    "inet_interfaces": "127.0.0.1", "mynetworks": "127.0.0.0/8",
    "local_recipient_maps": "inline:{ alice=x, postmaster=x }", "recipient_delimiter": "+",
    "virtual_mailbox_domains": "v.test, .sub.v.test",
    "virtual_mailbox_maps": "inline:{ bob@v.test=x, @a.sub.v.test=x }",
    "relay_domains": "relay.example",
    "relay_recipient_maps": "inline:{ carol@relay.example=x }",
    "relocated_maps": "inline:{ gone@v.test=new@elsewhere.example, gone=gone@new.example, "
                      "{ @old.relay.example=see www.relay.example } }",
}
MOVED = "Recipient address rejected: User has moved to"


def check(written: str, trusted: bool = False, **params: str) -> str | None:
    clear_cache()
    settings = Settings.from_config(Config("/nonexistent", {**BASE, **params}))
    rcpt = Recipient(written=written, address=parse_path(written, utf8=True),
                     client_addr="192.0.2.1", trusted=trusted)
    verdict = settings.relay.check(rcpt)
    return None if verdict is None else str(verdict)


@pytest.mark.parametrize("written, expected", [
    ("bob@v.test", None),
    ("Bob+tag@V.Test", None),
    ("nobody@v.test", "550 5.1.1 <nobody@v.test>: Recipient address rejected: "
                      "User unknown in virtual mailbox table"),
    ("anyone@a.sub.v.test", None),                                  # @domain key
    ("carol@relay.example", None),
    ("dave@relay.example", "550 5.1.1 <dave@relay.example>: Recipient address rejected: "
                           "User unknown in relay recipient table"),
    ("dave@a.relay.example", "550 5.1.1 <dave@a.relay.example>: Recipient address rejected: "
                             "User unknown in relay recipient table"),
    ("alice@test.example", None),
    ("nobody@test.example", "550 5.1.1 <nobody@test.example>: Recipient address rejected: "
                            "User unknown in local recipient table"),
    # relocated: any class, before the unknown-user checks (gone is not a local user)
    ("gone@v.test", f"550 5.1.6 <gone@v.test>: {MOVED} new@elsewhere.example"),
    ("gone+x@test.example", f"550 5.1.6 <gone+x@test.example>: {MOVED} gone@new.example"),
    ("gone@mx.test.example", f"550 5.1.6 <gone@mx.test.example>: {MOVED} gone@new.example"),
    ("x@old.relay.example", f"550 5.1.6 <x@old.relay.example>: {MOVED} see www.relay.example"),
    ("gone@relay.example", "550 5.1.1 <gone@relay.example>: Recipient address rejected: "
                           "User unknown in relay recipient table"),   # "gone" is for own domains
    # relay restrictions still come first
    ("nobody@elsewhere.example", "554 5.7.1 <nobody@elsewhere.example>: Relay access denied"),
])
def test_rcpt_checks(written: str, expected: str | None) -> None:
    assert check(written) == expected


def test_relocated_applies_to_trusted_clients_relaying_too() -> None:
    moved = {"relocated_maps": "inline:{ x@elsewhere.example=y@elsewhere.example }"}
    assert check("x@elsewhere.example", trusted=True, **moved) == \
        f"550 5.1.6 <x@elsewhere.example>: {MOVED} y@elsewhere.example"
    assert check("z@elsewhere.example", trusted=True, **moved) is None


@pytest.mark.parametrize("params, written", [
    ({"virtual_mailbox_maps": ""}, "nobody@v.test"),          # empty: everyone
    ({"relay_recipient_maps": ""}, "dave@relay.example"),
    ({"smtpd_reject_unlisted_recipient": "no"}, "nobody@v.test"),
    ({"smtpd_reject_unlisted_recipient": "no"}, "gone@v.test"),
    ({"mydestination": "v.test"}, "nobody@v.test"),             # local first: local_recipient_maps
])
def test_checks_that_do_not_apply(params: dict[str, str], written: str) -> None:
    verdict = check(written, **params)
    assert verdict is None or "local recipient table" in verdict


@pytest.mark.parametrize("param", ["virtual_mailbox_maps", "relay_recipient_maps", "relocated_maps",
                                   "virtual_mailbox_domains"])
def test_unreadable_table_is_temporary(tmp_path: Path, param: str) -> None:
    written = "dave@relay.example" if param == "relay_recipient_maps" else "nobody@v.test"
    assert check(written, **{param: f"lmdb:{tmp_path}/missing"}) == \
        f"451 4.3.0 <{written}>: Temporary lookup failure"


def test_default_virtual_mailbox_domains_is_the_maps(tmp_path: Path) -> None:
    params = {"virtual_mailbox_domains": "$virtual_mailbox_maps",
              "virtual_mailbox_maps": "inline:{ w.test=x, bob@w.test=x }"}
    assert check("bob@w.test", **params) is None
    assert check("eve@w.test", **params) == ("550 5.1.1 <eve@w.test>: Recipient address rejected: "
                                             "User unknown in virtual mailbox table")


def test_no_unknown_recipient_checks_accepts_unknown_users() -> None:
    """receive_override_options = no_unknown_recipient_checks (a re-injection
    smtpd) turns the unknown-recipient checks off."""
    assert check("nobody@v.test") is not None
    assert check("nobody@v.test", receive_override_options="no_unknown_recipient_checks") is None
