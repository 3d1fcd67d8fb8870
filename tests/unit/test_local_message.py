"""The forms local writes a message in (postpy.local.message)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from postpy.local import message
from postpy.local.message import Message
from postpy.queue import qfile

WHEN = time.mktime((2024, 11, 28, 19, 20, 1, 0, 0, -1))
STAMP = time.asctime(time.localtime(WHEN))


@pytest.mark.parametrize("content, expected", [
    (b"a\nFrom me\nb\n", b"a\n>From me\nb\n"),
    (b"From x\n", b">From x\n"),
    (b">From x\nFrom y\n", b">From x\n>From y\n"),          # mboxo: >From stays as is
    (b"From: header\n\nFromage\n", b"From: header\n\nFromage\n"),
    (b"a\n From x\n", b"a\n From x\n"),
    (b"", b""),
])
def test_mbox_quote(content: bytes, expected: bytes) -> None:
    assert message.mbox_quote(content) == expected


@pytest.mark.parametrize("sender, shown", [
    ("alice@example.org", "alice@example.org"),
    ("", "MAILER-DAEMON"),
    ('"john doe"@example.org', '"john doe"@example.org'),
    ("bare", "bare"),
])
def test_from_line(sender: str, shown: str) -> None:
    assert message.from_line(sender, WHEN) == f"From {shown} {STAMP}\n".encode()


@pytest.mark.parametrize("content, expected", [
    (b"Delivered-To: a@x\nSubject: s\n\nbody\n", {"a@x"}),
    (b"delivered-to:  <A@X>\nDELIVERED-TO: b@y\n\n", {"a@x", "b@y"}),
    (b"Delivered-To:\n a@folded\n\n", {"a@folded"}),
    (b"Subject: s\n\nDelivered-To: body@x\n", set()),          # only the header block
    (b"no header line\nDelivered-To: a@x\n", set()),
    (b"", set()),
    (b"Delivered-To: a@x", {"a@x"}),                             # no final newline
])
def test_delivered_to_addresses(content: bytes, expected: set[str]) -> None:
    assert message.delivered_to_addresses(content) == expected


def msg(content: bytes = b"Subject: hi\n\nFrom here\nbody\n") -> Message:
    return Message("QID", "s@example.org", content)


def test_mbox_form() -> None:
    data = message.mbox_form(msg(), "s@example.org", "rcpt@example.org", when=WHEN)
    assert data == (f"From s@example.org {STAMP}\n".encode()
                    + b"Return-Path: <s@example.org>\nDelivered-To: rcpt@example.org\n"
                    + b"Subject: hi\n\n>From here\nbody\n\n")


def test_mbox_form_adds_missing_newline_and_null_sender() -> None:
    data = message.mbox_form(msg(b"Subject: x\n\nno newline"), "", None, when=WHEN)
    assert data == (f"From MAILER-DAEMON {STAMP}\n".encode() + b"Return-Path: <>\n"
                    + b"Subject: x\n\nno newline\n\n")


def test_plain_form() -> None:
    assert message.plain_form(msg(), "s@example.org", None) == (
        b"Return-Path: <s@example.org>\nSubject: hi\n\nFrom here\nbody\n")
    with_line = message.plain_form(msg(), "s@example.org", "r@x", with_from_line=True, when=WHEN)
    assert with_line.startswith(f"From s@example.org {STAMP}\nReturn-Path: <s@example.org>\n"
                                "Delivered-To: r@x\n".encode())


def test_load_reads_the_queue_file(tmp_path: Path) -> None:
    env = qfile.Envelope("s@example.org", [qfile.Recipient("r@x")], arrival=WHEN,
                         attrs={"envid": "E1"})
    qfile.write_queue_file(str(tmp_path), "4AbCdEfGhz1", env,
                           b"Delivered-To: old@x\nSubject: s\n\nbody\n", durable=False)
    loaded = message.load(str(tmp_path / "4AbCdEfGhz1"))
    assert (loaded.queue_id, loaded.sender, loaded.attrs) == ("4AbCdEfGhz1", "s@example.org",
                                                              {"envid": "E1"})
    assert loaded.delivered_to == {"old@x"}
    assert loaded.content.endswith(b"body\n")
