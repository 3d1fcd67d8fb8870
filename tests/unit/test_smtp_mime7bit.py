"""8-bit to 7-bit MIME conversion for servers without 8BITMIME (postpy.smtp.mime7bit)."""

from __future__ import annotations

import email
from email import policy
from email.message import Message

import pytest

from postpy.smtp.mime7bit import to_7bit

BINARY = bytes(range(256)) * 3

PLAIN = b"Subject: caf\xc3\xa9 test\nFrom: a@example.com\n\ncaf\xc3\xa9 au lait \n.dot\n"

MULTIPART = (
    b"MIME-Version: 1.0\n"
    b"Subject: parts\n"
    b"Content-Type: multipart/mixed;\n boundary=\"=-b1\"\n"
    b"\n"
    b"preamble\n"
    b"--=-b1\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"gr\xc3\xbc\xc3\x9fe\n"
    b"--=-b1\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"already ascii\n"
    b"--=-b1\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: binary\n"
    b"\n" + BINARY.replace(b"\r\n", b"") + b"\n"
    b"--=-b1--\n"
    b"epilogue\n")

SEVEN_BIT = b"MIME-Version: 1.0\nContent-Type: text/plain\n\nplain ascii\n"

RFC822 = (
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=b\n\n"
    b"--b\nContent-Type: message/rfc822\n\nSubject: inner\n\nh\xc3\xa9\n"
    b"--b--\n")


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=policy.compat32)


def leaves(msg: Message) -> list[Message]:
    return [p for p in msg.walk() if not p.is_multipart()]


def is_7bit_body(data: bytes) -> bool:
    body = data.split(b"\n\n", 1)[1]
    return all(b < 0x80 for b in body)


@pytest.mark.parametrize("content, expect", [
    (PLAIN, "converted"),
    (MULTIPART, "converted"),
    (SEVEN_BIT, None),
    (b"Subject: h\xc3\xa9\n\nascii body\n", None),                       # 8-bit header only
    (RFC822, None),                                                      # 8-bit message/* part
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n"
     b"Content-Transfer-Encoding: 8bit\n\n--b\n\nh\xc3\xa9\n--b--\n", "converted"),  # relabelled 7bit
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n"
     b"Content-Transfer-Encoding: base64\n\n--b\n\nh\xc3\xa9\n--b--\n", None),
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n"
     b"--b\n\nh\xc3\xa9\n--b--\n", None),                                 # boundary never used
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed\n\n--b\n\nh\xc3\xa9\n", None),
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
     b"pre \xc3\xa9\n--b\n\nx\n--b--\n", None),                          # 8-bit preamble
    (b"MIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\n\xff\xfe\n", None),
    (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
     b"--b\n\nunclosed \xc3\xa9\n", "converted"),                        # no close delimiter
    (b"Subject: x\n", None),                                             # no body at all
    (b"", None),
])
def test_to_7bit_table(content: bytes, expect: str | None) -> None:
    out = to_7bit(content)
    if expect is None:
        assert out is None
    else:
        assert out is not None and is_7bit_body(out)


def test_plain_message_becomes_mime_quoted_printable() -> None:
    out = to_7bit(PLAIN)
    assert out is not None
    head, body = out.split(b"\n\n", 1)
    assert head == (b"Subject: caf\xc3\xa9 test\nFrom: a@example.com\nMIME-Version: 1.0\n"
                    b"Content-Type: text/plain; charset=unknown-8bit\n"
                    b"Content-Transfer-Encoding: quoted-printable")
    assert body == b"caf=C3=A9 au lait=20\n.dot\n"
    assert parse(out).get_payload(decode=True) == PLAIN.split(b"\n\n", 1)[1]


def test_multipart_parts_are_encoded_and_the_rest_kept() -> None:
    out = to_7bit(MULTIPART)
    assert out is not None and is_7bit_body(out)
    # untouched: top header (folding included), preamble, ascii part, delimiters, epilogue
    assert out.startswith(MULTIPART.split(b"\n--=-b1\n", 1)[0])
    assert b"--=-b1\nContent-Type: text/plain\n\nalready ascii\n--=-b1\n" in out
    assert out.endswith(b"\n--=-b1--\nepilogue\n")
    assert out.count(b"Content-Transfer-Encoding:") == 2
    assert b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n" in out
    assert b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n" in out
    assert b"MIME-Version: 1.0\n" in out and out.count(b"MIME-Version") == 1


@pytest.mark.parametrize("content", [PLAIN, MULTIPART,
                                     b"MIME-Version: 1.0\nContent-Type: image/png\n\n" + BINARY,
                                     b"Subject: cr\r\n\r\nlone\rcr \xe9\r\n" + b"x" * 200 + b"\xe9\r\n"])
def test_round_trip_decodes_to_the_original_parts(content: bytes) -> None:
    out = to_7bit(content)
    assert out is not None and is_7bit_body(out)
    assert max(len(line) for line in out.split(b"\n")) <= 998
    before = leaves(parse(content.replace(b"\r\n", b"\n")))
    after = leaves(parse(out))
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert new.get_payload(decode=True) == old.get_payload(decode=True)
        assert new.get_content_type() == old.get_content_type()


def nested(levels: int) -> bytes:
    inner = b"\n\xc3\xa9\n"
    for i in range(levels):
        inner = (f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode()
                 + inner + f"--b{i}--\n".encode())
    return b"MIME-Version: 1.0\n" + inner


def test_nesting_is_followed_up_to_a_limit() -> None:
    out = to_7bit(nested(20))
    assert out is not None and is_7bit_body(out)
    assert leaves(parse(out))[0].get_payload(decode=True) == b"\xc3\xa9"
    assert to_7bit(nested(150)) is None


def test_multipart_labelled_8bit_becomes_7bit() -> None:
    out = to_7bit(b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n"
                  b"Content-Transfer-Encoding: 8bit\n\n--b\n\nh\xc3\xa9\n--b--\n")
    assert out is not None and all(b < 0x80 for b in out)
    head = out.split(b"\n\n", 1)[0]
    assert head.count(b"Content-Transfer-Encoding") == 1 and b"Content-Transfer-Encoding: 7bit" in head
