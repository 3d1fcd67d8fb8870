"""Fuzz target: RFC 5322 address lists (postpy.mail.addrlist) and its users.

Random and mutated header values, header blocks and command-line
arguments may only ever raise :class:`postpy.mail.address.AddressError`.
Properties: every address the parser returns round-trips (parsing it
again, or the span it came from, gives the same address); qualifying a
list adds a domain to each unqualified address and changes nothing else;
and a list built from N well-formed members always yields exactly those N
addresses: a recipient never vanishes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz.mutate import inputs, text_inputs
from postpy.cleanup.headers import qualify_header
from postpy.cli.sendmail_input import argument_recipients, header_recipients, split_header_block
from postpy.mail.address import ATEXT, quote_local
from postpy.mail.addrlist import AddressError, Mailbox, parse_address_list, qualify_address_list
from postpy.mail.headers import HeaderBlockReader

SAMPLES = [
    "a@example.org", "root", "root (Cron Daemon)", 'bench2 (second), "Ann" <bench2>',
    "bench3, a@[127.0.0.2]", "Ann <a@[IPv6:2001:db8::1]> (c)", '"odd name"@x, "a@b"@c',
    "<@a.example,@b.example:x@y.example>", "team: a@x, Bob <b@y>;, c@z", "undisclosed-recipients:;",
    "=?utf-8?q?J=C3=B6rg?= <j@x>", 'a . "b" @ x . example', "a@x,\n\tb@y (folded)",
    "Jörg <jörg@bücher.example>", '"a\\"b" <c@d>', "(a (nested) comment) x@y",
]
BLOCKS = [f"To: {s}\nCc: root\nSubject: x\n\nbody\n".encode() for s in SAMPLES] + [
    b"Resent-To: a@[127.0.0.2]\nTo: b\n\n", b"To: a,\n b\nBcc: c@d\n\n"]


def check_mailboxes(text: str, found: list[Mailbox]) -> None:
    for m in found:
        again = parse_address_list(m.address)
        assert [x.address for x in again] == [m.address], (text, m)
        assert [x.address for x in parse_address_list(text[m.start:m.end])] == [m.address], (text, m)
        assert m.address == quote_local(m.local) + (f"@{m.domain}" if m.domain else "")


@given(text_inputs(SAMPLES))
def test_header_values(text: str) -> None:
    try:
        found = parse_address_list(text)
    except AddressError:
        return
    check_mailboxes(text, found)
    qualified = qualify_address_list(text, "origin.example")
    if qualified is None:
        assert all(m.domain for m in found)
        return
    after = parse_address_list(qualified)
    assert len(after) == len(found)
    for old, new in zip(found, after, strict=True):
        assert new.address == (old.address if old.domain else f"{old.address}@origin.example")


@given(st.lists(text_inputs(SAMPLES), min_size=1, max_size=4))
def test_command_line_addresses(args: list[str]) -> None:
    try:
        found = argument_recipients(args)
    except AddressError:
        return
    assert len(found) >= len(args)                     # every argument gave an address


@given(inputs(BLOCKS))
def test_header_blocks(data: bytes) -> None:
    reader, _held = split_header_block(iter([data]), 2048, 100)
    try:
        header_recipients(reader)
    except AddressError:
        pass
    for h in reader.headers:                           # cleanup's rewriting never fails
        out = qualify_header(h, "origin.example")
        assert out.raw == h.raw or out.raw.startswith(h.raw.partition(b":")[0] + b":")


# -- a recipient never vanishes -----------------------------------------------------

def _atom(min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(sorted(ATEXT)), min_size=min_size, max_size=8)


_LOCAL = st.one_of(
    st.lists(_atom(), min_size=1, max_size=3).map(".".join),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12),
    st.text(st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
            min_size=1, max_size=6))
_LABEL = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=1, max_size=10)
_DOMAIN = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
    st.just(""))                                                  # unqualified


@st.composite
def member(draw: st.DrawFn) -> tuple[str, str]:
    """(list member as written, the address the parser must return)."""
    local, domain = draw(_LOCAL), draw(_DOMAIN)
    address = quote_local(local) + (f"@{domain}" if domain else "")
    form = draw(st.integers(0, 4))
    if form == 0:
        return address, address
    if form == 1:
        name = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10))
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{quoted} <{address}>", address
    if form == 2:
        return f"{draw(_atom())} {draw(_atom())} <{address}>", address
    if form == 3:
        comment = draw(st.text(st.sampled_from("abc ,;:<>@[]\"."), max_size=10))
        return f"{address} ({comment})", address
    return f"=?utf-8?q?{draw(_atom())}?= <{address}>", address


@given(st.lists(member(), min_size=1, max_size=8), st.booleans(), st.sampled_from([", ", ",", ",\n\t"]))
def test_no_recipient_vanishes(members: list[tuple[str, str]], grouped: bool, sep: str) -> None:
    text = sep.join(written for written, _ in members)
    if grouped:
        text = f"group: {text};"
    found = parse_address_list(text)
    assert [m.address for m in found] == [address for _, address in members], text
    check_mailboxes(text, found)
    data = f"To: {text}\n\n".encode("utf-8", "surrogateescape")
    reader = HeaderBlockReader(len(data) + 10, 10)
    reader.feed(data)
    assert header_recipients(reader) == [address for _, address in members]
