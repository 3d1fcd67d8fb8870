"""cleanup's canonical mapping (cleanup.canonical) and masquerading (cleanup.masquerade)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.cleanup.canonical import (
    CLASSES,
    ENVELOPE_RECIPIENT,
    ENVELOPE_SENDER,
    HEADER_RECIPIENT,
    HEADER_SENDER,
    MAX_NESTING,
    Canonical,
    map_one,
    parse_classes,
)
from postpy.cleanup.masquerade import Masquerade
from postpy.config.maincf import Config
from postpy.tables.address_map import AddressMap
from postpy.tables.maps import TableError, clear_cache
from postpy.util import maillog


@pytest.fixture(autouse=True)
def log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "maillog"
    maillog.setup("cleanup", maillog_file=str(path))
    clear_cache()
    yield path
    clear_cache()


def table(name: str, entries: str) -> AddressMap:
    return AddressMap(name, [f"inline:{{{entries}}}"], delimiter="+", propagate=True,
                      myorigin="origin.example")


@pytest.mark.parametrize(("entries", "address", "result"), [
    ("a@x=b@y", "a@x", "b@y"),
    ("a@x=b@y, b@y=c@z", "a@x", "c@z"),                        # recursive
    ("a@x=A@x", "a@x", "a@x"),                                  # maps to itself
    ("a@x=b@y, b@y=a@x", "a@x", "a@x"),                         # a loop stops after 10 steps
    ("@old.example=@new.example", "joe+list@old.example", "joe+list@new.example"),
    ("a@x=b@y", "a+tag@x", "b+tag@y"),
    ("a@x=b@y", "", ""),                                        # the null address stays null
    ("a@x=b@y", "nobody@x", "nobody@x"),
])
def test_map_one(entries: str, address: str, result: str) -> None:
    assert map_one(table("canonical_maps", entries), address) == result


def test_nesting_limit_and_multi_valued_warnings(log: Path) -> None:
    chain = ", ".join(f"u{i}@x=u{i + 1}@x" for i in range(MAX_NESTING + 5))
    assert map_one(table("canonical_maps", chain), "u0@x") == f"u{MAX_NESTING}@x"
    assert "canonical_maps: unreasonable nesting for u0@x" in log.read_text()
    assert map_one(table("canonical_maps", "{a@x=b@y, c@z}"), "a@x") == "b@y"
    assert "multi-valued entry for a@x" in log.read_text()


def test_malformed_value_raises() -> None:
    with pytest.raises(TableError):
        map_one(table("canonical_maps", "a@x=<<"), "a@x")


def canonical(**classes: frozenset[str]) -> Canonical:
    return Canonical(common=table("canonical_maps", "a@x=common@x, s@x=common-s@x"),
                     sender=table("sender_canonical_maps", "a@x=sender@x"),
                     recipient=table("recipient_canonical_maps", "a@x=rcpt@x"), **classes)


@pytest.mark.parametrize(("address_class", "kwargs", "result"), [
    (ENVELOPE_SENDER, {}, "sender@x"),                 # sender table first (then common: no entry)
    (HEADER_SENDER, {}, "sender@x"),
    (ENVELOPE_RECIPIENT, {}, "rcpt@x"),
    (HEADER_RECIPIENT, {}, "rcpt@x"),
    (ENVELOPE_SENDER, {"sender_classes": frozenset({HEADER_SENDER})}, "common@x"),
    (HEADER_RECIPIENT, {"recipient_classes": frozenset({ENVELOPE_RECIPIENT})}, "common@x"),
    (HEADER_RECIPIENT, {"recipient_classes": frozenset(), "common_classes": frozenset()}, "a@x"),
    # the sender table never applies to recipients, whatever its classes say
    (ENVELOPE_RECIPIENT, {"sender_classes": frozenset(CLASSES), "recipient_classes": frozenset()},
     "common@x"),
])
def test_classes(address_class: str, kwargs: dict[str, frozenset[str]], result: str) -> None:
    assert canonical(**kwargs).rewrite("a@x", address_class) == result


def test_sender_then_common() -> None:
    both = Canonical(common=table("canonical_maps", "mid@x=last@x"),
                     sender=table("sender_canonical_maps", "first@x=mid@x"))
    assert both.rewrite("first@x", ENVELOPE_SENDER) == "last@x"
    assert both.rewrite("first@x", ENVELOPE_RECIPIENT) == "first@x"
    assert not Canonical()


def test_from_config_defaults_and_unknown_class(tmp_path: Path, log: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example",
                                          "canonical_maps": "inline:{a@x=b@x}",
                                          "sender_canonical_classes": "envelope_sender, bogus"})
    found = Canonical.from_config(cfg)
    assert found.common is not None and found.sender is None and found.recipient is None
    assert found.common_classes == frozenset(CLASSES)
    assert found.recipient_classes == frozenset({ENVELOPE_RECIPIENT, HEADER_RECIPIENT})
    assert parse_classes(cfg, "sender_canonical_classes") == frozenset({ENVELOPE_SENDER})
    assert "sender_canonical_classes: ignoring unknown address class 'bogus'" in log.read_text()


# -- masquerading -------------------------------------------------------------------

@pytest.mark.parametrize(("domains", "address", "result"), [
    (["example.com"], "joe@host.example.com", "joe@example.com"),
    (["example.com"], "joe@a.b.example.com", "joe@example.com"),
    (["example.com"], "joe@example.com", "joe@example.com"),
    (["example.com"], "joe@example.org", "joe@example.org"),
    (["example.com"], "joe@badexample.com", "joe@badexample.com"),
    (["example.com"], "joe", "joe"),
    (["example.com"], "joe@[192.0.2.1]", "joe@[192.0.2.1]"),
    (["example.com"], "JOE@HOST.Example.COM", "JOE@example.com"),
    (["sub.example.com", "example.com"], "joe@sub.example.com", "joe@sub.example.com"),
    (["sub.example.com", "example.com"], "joe@h.sub.example.com", "joe@sub.example.com"),
    (["sub.example.com", "example.com"], "joe@h.example.com", "joe@example.com"),
    (["!sub.example.com", "example.com"], "joe@h.sub.example.com", "joe@h.sub.example.com"),
    (["!sub.example.com", "example.com"], "joe@sub.example.com", "joe@sub.example.com"),
    (["!sub.example.com", "example.com"], "joe@other.example.com", "joe@example.com"),
    (["!", "", "example.com"], "joe@h.example.com", "joe@example.com"),
    (["example.com"], '"a b"@h.example.com', '"a b"@example.com'),
])
def test_masquerade(domains: list[str], address: str, result: str) -> None:
    assert Masquerade(domains).rewrite(address, "header_sender") == result


def test_masquerade_classes_and_exceptions() -> None:
    masq = Masquerade(["example.com"], ["root", "inline:{postmaster=yes}"])
    assert masq.rewrite("joe@h.example.com", "envelope_recipient") == "joe@h.example.com"
    assert masq.rewrite("joe@h.example.com", "envelope_sender") == "joe@example.com"
    assert masq.rewrite("Root@h.example.com", "header_sender") == "Root@h.example.com"
    assert masq.rewrite("postmaster@h.example.com", "header_sender") == "postmaster@h.example.com"
    assert not Masquerade()


def test_masquerade_from_config(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example", "mydomain": "example.com",
                                          "masquerade_domains": "!sub.$mydomain, $mydomain"})
    masq = Masquerade.from_config(cfg)
    assert masq.domains == ["!sub.example.com", "example.com"]
    assert masq.classes == frozenset({"envelope_sender", "header_sender", "header_recipient"})
