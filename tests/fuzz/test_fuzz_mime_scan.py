"""Fuzz target: the MIME structure of message bodies as cleanup's content
checks see it (postpy.cleanup.mime_scan), fed by any SMTP client.

The scanner has no way to refuse input: whatever the bytes, it must raise
nothing, and the pieces it returns must put together exactly the bytes fed,
whatever the chunk sizes (cleanup stores what the checks give back).
Properties: that, for three settings (every line, lines only inside MIME
structure, tiny line and header limits); every header piece is a header
line and its continuations; no body piece is longer than the line limit
plus its line end.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.mutate import inputs
from postpy.cleanup.mime_scan import BODY, HEADER, MimeScanner
from postpy.mail.headers import HeaderBlockReader, header_name

SAMPLES = [
    b"Content-Type: multipart/mixed; boundary=b\n\npre\n--b\nContent-Type: text/plain\n\nx\n--b--\nepi\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\nFrom: a@b\n\ninner body\n",
    b"Content-Type: multipart/digest; boundary=\"d d\"\n\n--d d\n\nSubject: m1\n\nb\n--d d--\n",
    b"Content-Type: multipart/alternative;\n boundary=x\n\n--x\nContent-Type: multipart/mixed;"
    b" boundary=y\n\n--y\n\nin y\n--x\nstray\n--y--\n--x--\n",
    b"Subject: plain\n\n" + b"z" * 3000 + b"\n--b\n\r\n\r\n",
    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n",
]


def scan(data: bytes, chunk: int, **kw: object) -> list:
    reader = HeaderBlockReader()
    reader.feed(data)
    reader.close()
    scanner = MimeScanner(reader.headers, **kw)  # type: ignore[arg-type]
    body = reader.body_start
    pieces = []
    for i in range(0, len(body), chunk):
        pieces += scanner.feed(body[i:i + chunk])
    pieces += scanner.close()
    assert b"".join(p.data for p in pieces) == body, kw
    return pieces


@given(inputs(SAMPLES), st.integers(1, 700))
@example(b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n" * 300, 3)
@example(b"Content-Type: multipart/mixed; boundary=\n\n--\n----\n", 1)
@example(b"Content-Type: message/rfc822\n\n" * 200, 50)
def test_pieces_rejoin(data: bytes, chunk: int) -> None:
    for kw in ({}, {"body_lines": False}, {"line_limit": 5, "header_limit": 10}):
        pieces = scan(data, chunk, **kw)
        limit = max(int(kw.get("line_limit", 2048)), 80)   # type: ignore[call-overload]
        for piece in pieces:
            if piece.kind == HEADER:
                assert header_name(piece.data) is not None, piece
            elif piece.kind == BODY:
                assert len(piece.data.rstrip(b"\n")) <= limit, piece
