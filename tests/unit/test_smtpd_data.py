"""DotReader and CrlfDecoder: end-of-data, smuggling variants, dot-stuffing,
bare CR/LF, long lines, and any split of the input into chunks."""

from __future__ import annotations

import pytest

from postpy.smtpd.data import CrlfDecoder, DotReader

SMUGGLED = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@test.example>\r\nDATA\r\nsmuggled\r\n"


def read_all(data: bytes, *, chunk: int = 0, line_limit: int = 2048) -> tuple[bytes, DotReader]:
    """Feed ``data`` whole (chunk=0) or in pieces of ``chunk`` bytes."""
    reader = DotReader(line_limit)
    out = []
    pieces = [data] if not chunk else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        if reader.done:
            break
        out.append(reader.feed(piece))
    return b"".join(out), reader


# (input, content, rest after the end marker, bare LF seen)
CASES = [
    (b".\r\n", b"", b"", False),
    (b"a\r\n.\r\n", b"a\n", b"", False),
    (b"a\r\nb\r\n.\r\nQUIT\r\n", b"a\nb\n", b"QUIT\r\n", False),
    (b"..\r\n.\r\n", b".\n", b"", False),
    (b"..x\r\n.\r\n", b".x\n", b"", False),
    (b"...\r\n.\r\n", b"..\n", b"", False),
    (b"a\r\n..\r\n.\r\n", b"a\n.\n", b"", False),
    (b"x.\r\n.\r\n", b"x.\n", b"", False),
    (b"\r\n.\r\n", b"\n", b"", False),
    (b"a\r\n\r\n.\r\n", b"a\n\n", b"", False),
    # bare CR is data
    (b"a\rb\r\n.\r\n", b"a\rb\n", b"", False),
    (b"a\r\r\n.\r\n", b"a\r\n", b"", False),
    # bare LF ends a line (normalize) and is noticed
    (b"a\nb\r\n.\r\n", b"a\nb\n", b"", True),
    (b"a\n\r\n.\r\n", b"a\n\n", b"", True),
    # NUL and 8-bit bytes pass through
    (b"\x00\xff\xc3\xa9\r\n.\r\n", b"\x00\xff\xc3\xa9\n", b"", False),
    # the end marker must be exactly CRLF . CRLF
    (b"a\r\n. \r\n.\r\n", b"a\n \n", b"", False),
    (b"a\r\n.x\r\n.\r\n", b"a\nx\n", b"", False),
]


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 7])
@pytest.mark.parametrize(("data", "content", "rest", "bare_lf"), CASES)
def test_dot_reader(data: bytes, content: bytes, rest: bytes, bare_lf: bool, chunk: int) -> None:
    got, reader = read_all(data, chunk=chunk)
    assert reader.done
    assert got == content
    assert reader.bare_lf == bare_lf
    if chunk == 0:
        assert reader.rest == rest


# Each smuggling variant: the "end" that a sloppy receiver would see is
# followed by a whole second transaction; the real end comes later.
SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\n",
]


@pytest.mark.parametrize("chunk", [0, 1, 5])
@pytest.mark.parametrize("marker", SMUGGLING, ids=repr)
def test_smuggling_variant_is_content(marker: bytes, chunk: int) -> None:
    data = b"Subject: one\r\n\r\nfirst" + marker + SMUGGLED + b".\r\nQUIT\r\n"
    got, reader = read_all(data, chunk=chunk)
    assert reader.done
    assert b"MAIL FROM:<evil@example.org>" in got
    assert b"smuggled" in got
    if chunk == 0:
        assert reader.rest == b"QUIT\r\n"


@pytest.mark.parametrize("marker", SMUGGLING, ids=repr)
def test_smuggling_variant_without_real_end_is_not_done(marker: bytes) -> None:
    _, reader = read_all(b"first" + marker + SMUGGLED)
    assert not reader.done


def test_dot_line_after_bare_lf_is_kept_as_dot() -> None:
    # "." ending in bare LF has no other characters: nothing to unstuff.
    got, reader = read_all(b"a\n.\nb\r\n.\r\n")
    assert got == b"a\n.\nb\n"
    assert reader.bare_lf


def test_long_lines_pass_in_pieces_unchanged() -> None:
    line = b"x" * 10000
    data = line + b"\r\n." + line + b"\r\n.\r\n"
    for chunk in (0, 100, 4096):
        got, reader = read_all(data, chunk=chunk, line_limit=64)
        assert reader.done
        assert got == line + b"\n" + line + b"\n"


def test_long_line_keeps_crlf_split_across_pieces() -> None:
    reader = DotReader(16)
    out = reader.feed(b"y" * 40 + b"\r")
    out += reader.feed(b"\n.\r\n")
    assert reader.done and out == b"y" * 40 + b"\n"


def test_received_counts_raw_bytes() -> None:
    reader = DotReader()
    reader.feed(b"ab\r\n")
    reader.feed(b".\r\nNOOP\r\n")
    assert reader.received == len(b"ab\r\n.\r\n")
    assert reader.rest == b"NOOP\r\n"


def test_feed_after_end_is_an_error() -> None:
    reader = DotReader()
    reader.feed(b".\r\n")
    with pytest.raises(ValueError):
        reader.feed(b"x")


def test_large_body_fast_path() -> None:
    body = (b"line of text " * 6 + b"\r\n") * 20000 + b"..stuffed\r\n" + b"last\r\n"
    got, reader = read_all(body + b".\r\n", chunk=65536)
    assert reader.done
    assert got == body.replace(b"\r\n", b"\n").replace(b"\n..stuffed", b"\n.stuffed")


@pytest.mark.parametrize(("chunks", "content"), [
    ([b"a\r\nb\r\n"], b"a\nb\n"),
    ([b"a\r", b"\nb"], b"a\nb"),
    ([b"a\r"], b"a\r"),
    ([b"a\n\rb"], b"a\n\rb"),
    ([b"\r", b"\r", b"\n"], b"\r\n"),
    ([b".\r\n"], b".\n"),
    ([b""], b""),
])
def test_crlf_decoder(chunks: list[bytes], content: bytes) -> None:
    decoder = CrlfDecoder()
    out = b"".join(decoder.feed(c) for c in chunks) + decoder.finish()
    assert out == content
