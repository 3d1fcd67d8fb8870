"""The RFC 5322 address-list parser (postpy.mail.addrlist): tables of good
and malformed lists, spans for in-place rewriting, and qualification."""

from __future__ import annotations

import pytest

from postpy.mail.addrlist import (
    AddressError,
    addresses,
    parse_address_list,
    qualify_address_list,
)

# text, [(address, display, group), ...]
GOOD = [
    ("a@example.org", [("a@example.org", "", "")]),
    ("root", [("root", "", "")]),
    ("a@x, b@y", [("a@x", "", ""), ("b@y", "", "")]),
    ("a@x,b@y", [("a@x", "", ""), ("b@y", "", "")]),
    ("Bob <bob@x.example>", [("bob@x.example", "Bob", "")]),
    ('"Smith, Bob" <bob@x.example>', [("bob@x.example", '"Smith, Bob"', "")]),
    ("Bob Q. Public <bob@x.example>", [("bob@x.example", "Bob Q. Public", "")]),    # obs-phrase
    ("<bob@x.example>", [("bob@x.example", "", "")]),
    ("Ann <ann>", [("ann", "Ann", "")]),                                           # unqualified
    ("root (Cron Daemon)", [("root", "", "")]),
    ("(c1) a (c2) @ (c3) x.example (c4)", [("a@x.example", "", "")]),
    ("a@x (nested (comment) \\) here)", [("a@x", "", "")]),
    ("a@x,\r\n b@y", [("a@x", "", ""), ("b@y", "", "")]),                          # folded
    ("a@x,\n\tb@y", [("a@x", "", ""), ("b@y", "", "")]),
    ('"odd name"@x', [('"odd name"@x', "", "")]),
    ('"a@b"@c', [('"a@b"@c', "", "")]),
    ('"a\\"b"@c', [('"a\\"b"@c', "", "")]),
    ('"bob"@x', [("bob@x", "", "")]),                                             # canonical
    ('a . "b" @ x', [("a.b@x", "", "")]),                                          # obs-local-part
    ("a@ x . example", [("a@x.example", "", "")]),                                 # obs-domain
    ("a@[127.0.0.2]", [("a@[127.0.0.2]", "", "")]),
    ("a@[IPv6:2001:db8::1]", [("a@[IPv6:2001:db8::1]", "", "")]),
    ("a@[ 127.0.0.2 ]", [("a@[127.0.0.2]", "", "")]),
    ("<@a.example,@b.example:x@y.example>", [("x@y.example", "", "")]),            # obs-route
    ("Ann <,@a.example:x@y.example>", [("x@y.example", "Ann", "")]),
    ("undisclosed-recipients:;", []),
    ("team: a@x, Bob <b@y>;", [("a@x", "", "team"), ("b@y", "Bob", "team")]),
    ("team: a@x; , c@z", [("a@x", "", "team"), ("c@z", "", "")]),
    ("team: a@x", [("a@x", "", "team")]),                                          # no final ";"
    ("a@x, , b@y,", [("a@x", "", ""), ("b@y", "", "")]),                          # obs empty members
    ("", []),
    ("  (only a comment) ", []),
    ("=?utf-8?q?J=C3=B6rg?= <j@x>", [("j@x", "=?utf-8?q?J=C3=B6rg?=", "")]),
    ("=?utf-8?b?SsO2cmc=?= <j@x>", [("j@x", "=?utf-8?b?SsO2cmc=?=", "")]),
    ("Jörg <jörg@bücher.example>", [("jörg@bücher.example", "Jörg", "")]),          # RFC 6532
    ("user+tag@x.example", [("user+tag@x.example", "", "")]),
]

# Lists that email.utils.getaddresses gets wrong: on Python 3.11.2 it returns
# ('', '') for domain literals (so the recipient vanished) and for obsolete
# routes; later 3.11/3.12 releases split a route into three bogus addresses.
STDLIB_TRIPS = [
    ("bench3, a@[127.0.0.2]", ["bench3", "a@[127.0.0.2]"]),
    ("a@[IPv6:2001:db8::1]", ["a@[IPv6:2001:db8::1]"]),
    ("a@[127.0.0.2] (c)", ["a@[127.0.0.2]"]),
    ("Ann <a@[127.0.0.2]>", ["a@[127.0.0.2]"]),
    ("<@a,@b:x@y.example>", ["x@y.example"]),
    ('a . "b" @ x', ["a.b@x"]),
    ('"a,b" <c@d>, e@f', ["c@d", "e@f"]),
]

BAD = [
    ("a@x b@y", "expected ','"),
    ("John Smith", "bad local part"),
    ("a@", "expected a domain"),
    ("@x", "expected an address"),
    ("a@x.", "expected ','"),
    ("a@-x", "bad domain"),
    ("a@[127.0.0.300]", "bad domain"),
    ("a@[foo]", "bad domain"),
    ("a@[1.2.3.4", "unterminated domain literal"),
    ("a@[1.[2].3.4]", "bad character"),
    ('"unterminated@x', "unterminated quoted string"),
    ("(unterminated a@x", "unterminated comment"),
    ("a@x)", "unexpected ')'"),
    ("<>", "empty address"),
    ("<a@x", "expected '>'"),
    ("a@x>", "expected ','"),
    ("g: a, h: b;;", "a group inside a group"),
    ("a..b@x", "bad local part"),
    (".a@x", "bad local part"),
    ('""@x', "bad local part"),
    ("a\x00b@x", "unexpected"),
    ("a@x\x7f", "unexpected"),
    ("a\udcff@x", "bad local part"),                      # not UTF-8
    ("<@a.example x@y>", "bad route"),
    ("a@x;", "expected ','"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_lists(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.address, m.display, m.group) for m in parse_address_list(text)] == expected


@pytest.mark.parametrize(("text", "expected"), STDLIB_TRIPS)
def test_lists_the_standard_library_gets_wrong(text: str, expected: list[str]) -> None:
    assert addresses([text]) == expected


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_bad_lists_are_refused(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_address_list(text)


def test_addresses_names_the_list_it_refuses() -> None:
    with pytest.raises(AddressError, match=r"^'a@x, b@\[1\]': bad domain"):
        addresses(["ok@x", "a@x, b@[1]"])


@pytest.mark.parametrize("text", [t for t, _ in GOOD] + [t for t, _ in STDLIB_TRIPS])
def test_every_address_round_trips(text: str) -> None:
    for mailbox in parse_address_list(text):
        assert [m.address for m in parse_address_list(mailbox.address)] == [mailbox.address]
        spec = text[mailbox.start:mailbox.end]
        assert [m.address for m in parse_address_list(spec)] == [mailbox.address]


@pytest.mark.parametrize(("text", "domain", "expected"), [
    ("root", "o.example", "root@o.example"),
    ("root (Cron Daemon)", "o.example", "root@o.example (Cron Daemon)"),
    ('bench2 (second), "Ann" <bench2>', "o.example",
     'bench2@o.example (second), "Ann" <bench2@o.example>'),
    ('"odd name" , x@y', "o.example", '"odd name"@o.example , x@y'),
    ("a . b", "o.example", "a . b@o.example"),
    ("g: a, b@x;", "o.example", "g: a@o.example, b@x;"),
    ("a@x", "o.example", None),
    ("root", "", None),
    ("", "o.example", None),
])
def test_qualify_address_list(text: str, domain: str, expected: str | None) -> None:
    assert qualify_address_list(text, domain) == expected
    if expected is not None:
        assert all(m.domain for m in parse_address_list(expected))
