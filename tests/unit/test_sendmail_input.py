"""sendmail's stdin filter: line ends, the dot line, From_ lines, -t recipients."""

from __future__ import annotations

import io

import pytest

from postpy.cli.sendmail_input import (
    AddressError,
    InputError,
    InputFilter,
    argument_recipients,
    header_recipients,
    read_chunks,
    split_header_block,
)


def run_filter(data: bytes, *, dots: bool, sizes: tuple[int, ...] = ()) -> bytes:
    """Feed ``data`` split at ``sizes`` (cycled), or one byte at a time when empty."""
    filt = InputFilter(dot_ends_input=dots)
    out = bytearray()
    pos = 0
    step = 0
    while pos < len(data) and not filt.done:
        n = sizes[step % len(sizes)] if sizes else 1
        step += 1
        out += filt.feed(data[pos:pos + n])
        pos += n
    out += filt.finish()
    return bytes(out)


FILTER_CASES = [
    # input, dot_ends_input, expected content
    (b"", True, b""),
    (b"a\n", True, b"a\n"),
    (b"a", True, b"a\n"),                              # final newline added
    (b"a\r\nb\r\n", True, b"a\nb\n"),                  # CRLF -> LF
    (b"a\rb\n", True, b"a\rb\n"),                      # bare CR is data
    (b"a\r", True, b"a\r\n"),
    (b"a\n.\nb\n", True, b"a\n"),                      # the dot line ends input
    (b"a\r\n.\r\nb\r\n", True, b"a\n"),
    (b".\n", True, b""),
    (b".", True, b""),                                 # "." at EOF without newline
    (b"a\n.", True, b"a\n"),
    (b"a\n.\n", False, b"a\n.\n"),                     # -i: dots are data
    (b"a\n..\nb\n", True, b"a\n..\nb\n"),              # no unstuffing
    (b"a\n.b\n", True, b"a\n.b\n"),
    (b"a.\nb\n", True, b"a.\nb\n"),
    (b"From alice Mon Aug 25\nSubject: x\n\nbody\n", True, b"Subject: x\n\nbody\n"),
    (b">From alice\nSubject: x\n", True, b"Subject: x\n"),
    (b"From alice", True, b""),
    (b"Subject: x\n\nFrom here\n", True, b"Subject: x\n\nFrom here\n"),   # only the first line
    (b"Fromage: x\n", True, b"Fromage: x\n"),
    (b"\x00\xff\xfe 8bit\n", True, b"\x00\xff\xfe 8bit\n"),
    (b"From x\n.\nrest\n", True, b""),
]


@pytest.mark.parametrize("sizes", [(), (2,), (3, 1), (7,), (65536,)])
@pytest.mark.parametrize("data, dots, expected", FILTER_CASES)
def test_filter(data: bytes, dots: bool, expected: bytes, sizes: tuple[int, ...]) -> None:
    assert run_filter(data, dots=dots, sizes=sizes) == expected


def test_large_input_streams_in_bounded_chunks() -> None:
    line = b"x" * 99 + b"\r\n"
    total = 20000
    stream = io.BytesIO(line * total)
    filt = InputFilter(dot_ends_input=True)
    size = biggest = 0
    for chunk in read_chunks(stream.read, filt):
        size += len(chunk)
        biggest = max(biggest, len(chunk))
    assert size == 100 * total
    assert biggest <= 65536 + 2


def test_read_error_is_input_error() -> None:
    def broken(_n: int) -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(InputError, match="Input/output error"):
        list(read_chunks(broken, InputFilter(dot_ends_input=True)))


def _headers(text: bytes) -> list[str]:
    chunks = iter([text[i:i + 5] for i in range(0, len(text), 5)])
    reader, held = split_header_block(chunks, 102400, 1000)
    assert b"".join(held) + b"".join(chunks) == text      # nothing lost
    return header_recipients(reader)


@pytest.mark.parametrize("text, expected", [
    (b"To: a@x.example\n\nbody\n", ["a@x.example"]),
    (b"To: a@x.example, Bob <b@y.example>\nCc: c\nBcc: d@z\n\n", ["a@x.example", "b@y.example", "c", "d@z"]),
    (b"To: a@x,\n  b@y\n\n", ["a@x", "b@y"]),                      # folded
    (b"TO: a@x\ncC: b@y\n\n", ["a@x", "b@y"]),                     # case
    (b"Subject: none\n\n", []),
    (b"To: undisclosed-recipients:;\n\n", []),
    (b"To: a@x\nResent-To: r@y\n\n", ["r@y"]),                     # Resent- wins
    (b"To: a@x\nResent-From: r@y\n\n", []),                        # ... even with no Resent-To
    (b"Subject: x\n\nTo: not@header\n", []),                       # body is not headers
    (b"To: a@x", ["a@x"]),                                         # no body, no newline
    # A quoted local part with a space is a recipient like any other.
    (b"To: \"odd name\"@x, (comment) c@y\n\n", ['"odd name"@x', "c@y"]),
    # Address literals, routes, groups: getaddresses drops these on Python 3.11.2.
    (b"To: bench3, b@[127.0.0.2]\n\n", ["bench3", "b@[127.0.0.2]"]),
    (b"To: Ann <a@[IPv6:2001:db8::1]> (c)\n\n", ["a@[IPv6:2001:db8::1]"]),
    (b"To: <@a.example,@b.example:x@y.example>\n\n", ["x@y.example"]),
    (b"To: team: a@x, b@y;, c@z\n\n", ["a@x", "b@y", "c@z"]),
    (b"Cc: root (Cron Daemon)\n\n", ["root"]),
])
def test_header_recipients(text: bytes, expected: list[str]) -> None:
    assert _headers(text) == expected


@pytest.mark.parametrize("args, expected", [
    (["bob"], ["bob"]),
    (["bob@example.com", "carol"], ["bob@example.com", "carol"]),
    (["Bob <bob@example.com>"], ["bob@example.com"]),
    (["a@x, b@y"], ["a@x", "b@y"]),
    (["a@x,b@y"], ["a@x", "b@y"]),
    (["user+ext@example.com"], ["user+ext@example.com"]),
    (["bench3", "a@[127.0.0.2]"], ["bench3", "a@[127.0.0.2]"]),
    (["a@[127.0.0.2]"], ["a@[127.0.0.2]"]),
    (["Ann <a@[IPv6:2001:db8::1]>"], ["a@[IPv6:2001:db8::1]"]),
    (['"a b"@example.com'], ['"a b"@example.com']),
])
def test_argument_recipients(args: list[str], expected: list[str]) -> None:
    assert argument_recipients(args) == expected


@pytest.mark.parametrize("args", [
    ["a@[127.0.0.300]"], ["bob", "a@b c@d"], ["(unterminated"], [""], ["undisclosed:;"], ["x@"],
])
def test_argument_recipients_refuses_what_it_cannot_parse(args: list[str]) -> None:
    with pytest.raises(AddressError) as info:
        argument_recipients(args)
    assert repr(args[-1]) in str(info.value)                 # the argument is named


@pytest.mark.parametrize("text, header", [
    (b"To: a@x, b@[1.2.3]\n\n", "To"),
    (b"To: a@x\nCc: \"unterminated\n\n", "Cc"),
])
def test_header_recipients_refuses_what_it_cannot_parse(text: bytes, header: str) -> None:
    with pytest.raises(AddressError, match=f"in header {header}: "):
        _headers(text)


def test_truncated_recipient_header_is_refused() -> None:
    text = b"To: " + b", ".join(b"user%d@example.com" % i for i in range(100)) + b"\n\n"
    reader, _held = split_header_block(iter([text]), 200, 1000)
    with pytest.raises(AddressError, match="header_size_limit"):
        header_recipients(reader)
