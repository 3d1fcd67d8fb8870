"""Pure parts of the smtp client: replies, EHLO features, DATA encoding, xtext, next hops."""

from __future__ import annotations

import pytest

from postpy.smtp.dns import Nexthop, literal_address, parse_nexthop
from postpy.smtp.encode import DataEncoder, encode_all, orcpt_param, scan, xtext
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.reply import Features, Reply, ReplyError, parse_line


@pytest.mark.parametrize("line, expected", [
    ("250 Ok", (250, True, "Ok")),
    ("250-PIPELINING", (250, False, "PIPELINING")),
    ("250", (250, True, "")),
    ("421 4.3.2 shutting down", (421, True, "4.3.2 shutting down")),
    ("554 ", (554, True, "")),
])
def test_parse_line(line: str, expected: tuple[int, bool, str]) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize("line", ["", "25 Ok", "2500 Ok", "abc", "250_x", "199 too low", "600 x",
                                  " 250 Ok", "250x"])
def test_parse_line_malformed(line: str) -> None:
    with pytest.raises(ReplyError):
        parse_line(line)


@pytest.mark.parametrize("code, first, dsn", [
    (250, "2.0.0 Ok: queued as X", "2.0.0"),
    (550, "5.1.1 <a@b>: User unknown", "5.1.1"),
    (550, "User unknown", "5.0.0"),
    (450, "4.7.1 try later", "4.7.1"),
    (450, "5.7.1 class mismatch", "4.0.0"),     # enhanced code of another class is ignored
    (550, "5.1.10 null MX", "5.1.10"),
    (250, "2.0.0x not a code", "2.0.0"),
    (221, "", "2.0.0"),
])
def test_reply_dsn(code: int, first: str, dsn: str) -> None:
    assert Reply(code, [first]).dsn == dsn


def test_reply_text_joins_lines_like_postfix() -> None:
    reply = Reply(550, ["5.1.1 first", "5.1.1 second"])
    assert reply.text() == "550-5.1.1 first 550 5.1.1 second"
    assert Reply(250, []).text() == "250"


def test_features_from_ehlo() -> None:
    reply = Reply(250, ["mx.example greets you", "PIPELINING", "SIZE 1000", "8BITMIME",
                        "smtputf8", "DSN", "STARTTLS", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"])
    f = Features.from_ehlo(reply)
    assert (f.name, f.pipelining, f.size, f.eightbitmime, f.smtputf8, f.dsn, f.starttls) == \
        ("mx.example", True, 1000, True, True, True, True)
    assert f.keywords["AUTH"] == "PLAIN LOGIN"
    bare = Features.from_ehlo(Reply(250, ["x", "SIZE", "SIZE junk"]))
    assert bare.size == 0 and not bare.pipelining
    assert Features.from_ehlo(Reply(250, ["x"])).size is None
    assert Features.from_helo(Reply(250, ["old.example hi"])) == Features(esmtp=False, name="old.example")


@pytest.mark.parametrize("stored, wire", [
    (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),                    # CRLF stored: not doubled
    (b"a\nb", b"a\r\nb\r\n.\r\n"),                          # no final newline
    (b"", b".\r\n"),
    (b".\n", b"..\r\n.\r\n"),
    (b".hidden\n..two\nx.y\n.", b"..hidden\r\n...two\r\nx.y\r\n..\r\n.\r\n"),
    (b"a\rb\n", b"a\rb\r\n.\r\n"),                          # a lone CR stays
    (b"\n\n", b"\r\n\r\n.\r\n"),
    (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),                   # a stored lone dot is stuffed
])
def test_data_encoding(stored: bytes, wire: bytes) -> None:
    assert encode_all([stored]) == wire
    # the same bytes in chunks split at every position
    for cut in range(len(stored) + 1):
        assert encode_all([stored[:cut], stored[cut:]]) == wire, cut
    assert encode_all([bytes([b]) for b in stored]) == wire


@pytest.mark.parametrize("stored, limit, wire", [
    (b"abcdefghij\n", 4, b"abcd\r\n efg\r\n hij\r\n.\r\n"),
    (b"abcd\nabcde", 4, b"abcd\r\nabcd\r\n e\r\n.\r\n"),
    (b".abcdefg\r\n", 4, b"..abc\r\n def\r\n g\r\n.\r\n"),
    (b"abcdefghij\n", 0, b"abcdefghij\r\n.\r\n"),          # 0: no limit
])
def test_long_lines_are_broken(stored: bytes, limit: int, wire: bytes) -> None:
    assert encode_all([stored], limit) == wire
    for cut in range(len(stored) + 1):
        assert encode_all([stored[:cut], stored[cut:]], limit) == wire, cut


def test_default_limit_keeps_lines_within_rfc5321() -> None:
    wire = encode_all([b"Subject: " + b"x" * 3000 + b"\n\nbody\n"])
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    assert wire.startswith(b"Subject: xxx") and b"\r\n xxx" in wire


def test_encoder_streams_lines_as_they_complete() -> None:
    enc = DataEncoder()
    assert enc.feed(b"partial") == b""
    assert enc.feed(b" line\n.next") == b"partial line\r\n"
    assert enc.finish() == b"..next\r\n.\r\n"


@pytest.mark.parametrize("text, encoded", [
    ("plain@example.org", "plain@example.org"),
    ("a+b=c@x", "a+2Bb+3Dc@x"),
    ("sp ace", "sp+20ace"),
    ("é", "+C3+A9"),
    ("", ""),
])
def test_xtext(text: str, encoded: str) -> None:
    assert xtext(text) == encoded


@pytest.mark.parametrize("stored, utf8, wire", [
    ("rfc822;bob+x@example.org", False, "rfc822;bob+2Bx@example.org"),
    ("utf-8;jürgen@example.org", True, "utf-8;jürgen@example.org"),
    ("utf-8;jürgen@example.org", False, "utf-8;j\\x{FC}rgen@example.org"),  # RFC 6533
    ("rfc822", False, ""),
    ("rfc822;", False, ""),
])
def test_orcpt_param(stored: str, utf8: bool, wire: str) -> None:
    assert orcpt_param(stored, smtputf8=utf8) == wire


@pytest.mark.parametrize("chunks, eightbit, header_utf8", [
    ([b"Subject: x\n\nbody\n"], False, False),
    ([b"Subject: x\n\nb\xc3\xa9\n"], True, False),
    ([b"Subject: \xc3\xa9\n\nbody\n"], True, True),
    ([b"Subject: x\n", b"\nb\xc3\xa9\n"], True, False),     # blank line on a chunk boundary
    ([b"Subject: x\n\r", b"\nb\xc3\xa9\n"], True, False),
    ([b"\nbody \xff\n"], True, False),                      # no header at all
])
def test_scan(chunks: list[bytes], eightbit: bool, header_utf8: bool) -> None:
    found = scan(chunks)
    assert (found.eightbit, found.header_utf8) == (eightbit, header_utf8)


@pytest.mark.parametrize("text, hops", [
    ("example.org", [Nexthop("example.org", 25, True)]),
    ("example.org:2525", [Nexthop("example.org", 2525, True)]),
    ("[mail.example.org]", [Nexthop("mail.example.org", 25, False)]),
    ("[127.0.0.1]:2526", [Nexthop("127.0.0.1", 2526, False)]),
    ("[ipv6:::1]:26", [Nexthop("ipv6:::1", 26, False)]),
    ("[::1]", [Nexthop("::1", 25, False)]),
    ("[a]:1, [b]:2 c", [Nexthop("a", 1, False), Nexthop("b", 2, False), Nexthop("c", 25, True)]),
    ("[a]:smtp", [Nexthop("a", 25, False)]),
])
def test_parse_nexthop(text: str, hops: list[Nexthop]) -> None:
    assert parse_nexthop(text, 25) == hops


@pytest.mark.parametrize("text", ["", "  ", "[]", "[a", "[a]x", "[a]:0", "[a]:99999", "a:nosuchservice",
                                  "[a]:-1"])
def test_parse_nexthop_malformed_defers(text: str) -> None:
    with pytest.raises(DeliveryFailure) as info:
        parse_nexthop(text, 25)
    assert info.value.dsn == "4.3.5" and not info.value.permanent


@pytest.mark.parametrize("host, address", [
    ("192.0.2.1", "192.0.2.1"), ("ipv6:2001:db8::1", "2001:db8::1"), ("::1", "::1"),
    ("IPv6:::1", "::1"), ("mx.example", None), ("999.1.1.1", None),
])
def test_literal_address(host: str, address: str | None) -> None:
    assert literal_address(host) == address


def test_failure_status() -> None:
    assert DeliveryFailure("4.4.1", "x").status == "deferred"
    assert DeliveryFailure("5.1.1", "x").status == "bounced"
    with pytest.raises(ValueError):
        DeliveryFailure("2.0.0", "not a failure")
