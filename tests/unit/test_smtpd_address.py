"""postpy.mail.address: splitting, quoting, route stripping, syntax checks."""

from __future__ import annotations

import ipaddress

import pytest

from postpy.mail.address import (
    AddressError,
    check_mailbox,
    domain_literal_address,
    has_routing,
    is_dot_string,
    is_quoted_string,
    join_address,
    parse_path,
    quote_local,
    split_address,
    strip_source_route,
    unquote_local,
    valid_domain,
)


@pytest.mark.parametrize(("address", "local", "domain"), [
    ("user@example.org", "user", "example.org"),
    ("user", "user", ""),
    ('"a@b"@example.org', '"a@b"', "example.org"),
    ('"a\\"@b"@example.org', '"a\\"@b"', "example.org"),
    ("a@b@c", "a@b", "c"),
    ("user%other@local", "user%other", "local"),
    ("host!user@local", "host!user", "local"),
    ('"unterminated@x', '"unterminated@x', ""),
    ("@", "", ""),
])
def test_split_address(address: str, local: str, domain: str) -> None:
    assert split_address(address) == (local, domain)


@pytest.mark.parametrize(("written", "unquoted"), [
    ("user", "user"),
    ('"a b"', "a b"),
    ('"a\\"b"', 'a"b'),
    ('"user@other"', "user@other"),
    ('"a\\\\b"', "a\\b"),
])
def test_unquote_and_quote(written: str, unquoted: str) -> None:
    assert unquote_local(written) == unquoted
    assert unquote_local(quote_local(unquoted)) == unquoted


def test_join_address_quotes_when_needed() -> None:
    assert join_address("a b", "x.example") == '"a b"@x.example'
    assert join_address("ab", "") == "ab"


@pytest.mark.parametrize(("text", "utf8", "ok"), [
    ("user", False, True),
    ("first.last", False, True),
    ("a+b-c_d=e", False, True),
    (".lead", False, False),
    ("trail.", False, False),
    ("dou..ble", False, False),
    ("", False, False),
    ("sp ace", False, False),
    ("jörg", False, False),
    ("jörg", True, True),
    ("bad\udcff", True, False),
])
def test_dot_string(text: str, utf8: bool, ok: bool) -> None:
    assert is_dot_string(text, utf8=utf8) == ok


@pytest.mark.parametrize(("text", "ok"), [
    ('"a b"', True),
    ('""', True),
    ('"a\\"b"', True),
    ('"a"b"', False),
    ('"a', False),
    ('"tab\there"', False),
    ('"end\\"', False),
])
def test_quoted_string(text: str, ok: bool) -> None:
    assert is_quoted_string(text) == ok


@pytest.mark.parametrize(("local", "routed"), [
    ("user", False), ("user%other", True), ("host!user", True), ("user@other", True),
])
def test_has_routing(local: str, routed: bool) -> None:
    assert has_routing(local) == routed


@pytest.mark.parametrize(("domain", "utf8", "ok"), [
    ("example.org", False, True),
    ("localhost", False, True),
    ("a-b.example", False, True),
    ("-a.example", False, False),
    ("a-.example", False, False),
    ("a..example", False, False),
    ("example.org.", False, False),
    ("exa_mple.org", False, False),
    ("x" * 64 + ".example", False, False),
    ("bücher.example", False, False),
    ("bücher.example", True, True),
    ("[192.0.2.1]", False, True),
    ("[IPv6:2001:db8::1]", False, True),
    ("[999.0.0.1]", False, False),
    ("[2001:db8::1]", False, False),
    ("", False, False),
])
def test_valid_domain(domain: str, utf8: bool, ok: bool) -> None:
    assert valid_domain(domain, utf8=utf8) == ok


def test_domain_literal_address() -> None:
    assert domain_literal_address("[127.0.0.1]") == ipaddress.IPv4Address("127.0.0.1")
    assert domain_literal_address("[ipv6:::1]") == ipaddress.IPv6Address("::1")
    assert domain_literal_address("example.org") is None


@pytest.mark.parametrize(("path", "mailbox"), [
    ("user@c", "user@c"),
    ("@a:user@c", "user@c"),
    ("@a,@b:user@c", "user@c"),
    ("@[192.0.2.1]:user@c", "user@c"),
    ("@[IPv6:::1],@b:user@c", "user@c"),
])
def test_strip_source_route(path: str, mailbox: str) -> None:
    assert strip_source_route(path) == mailbox


@pytest.mark.parametrize("path", ["@a", "@:user@c", "@a;user@c", "@a,b:user@c", "@a:", "@[1.2.3.4"])
def test_bad_source_route(path: str) -> None:
    with pytest.raises(AddressError):
        parse_path(path)


@pytest.mark.parametrize(("inner", "utf8", "result"), [
    ("", False, ""),
    ("user@example.org", False, "user@example.org"),
    ("postmaster", False, "postmaster"),
    ('"a b"@example.org', False, '"a b"@example.org'),
    ("@relay.example:user@example.org", False, "user@example.org"),
    ("jörg@bücher.example", True, "jörg@bücher.example"),
    ("user@[127.0.0.1]", False, "user@[127.0.0.1]"),
])
def test_parse_path_good(inner: str, utf8: bool, result: str) -> None:
    assert parse_path(inner, utf8=utf8) == result


@pytest.mark.parametrize(("inner", "utf8"), [
    ("user@", False),
    ("@example.org", False),
    ("us er@example.org", False),
    ("user@exa mple.org", False),
    ("user@@example.org", False),
    ("a..b@example.org", False),
    ("jörg@example.org", False),
    ("user\udcff@example.org", True),
    ("user@[300.1.1.1]", False),
    ("<user@example.org>", False),
])
def test_parse_path_bad(inner: str, utf8: bool) -> None:
    with pytest.raises(AddressError):
        parse_path(inner, utf8=utf8)


def test_null_path_can_be_refused() -> None:
    with pytest.raises(AddressError):
        parse_path("", allow_null=False)


def test_check_mailbox_needs_domain() -> None:
    assert check_mailbox("a@b.example", need_domain=True) == ("a", "b.example")
    with pytest.raises(AddressError):
        check_mailbox("a", need_domain=True)
