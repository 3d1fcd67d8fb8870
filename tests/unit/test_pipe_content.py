"""What a pipe(8) command reads on stdin (postpy.pipe.content)."""

from __future__ import annotations

import time

import pytest

from postpy.pipe.content import build, single_recipient_problem
from postpy.pipe.settings import PipeSettings
from postpy.util.privs import Identity

WHO = Identity("nobody", 65534, 65534)
CONTENT = b"Subject: s\n\n.dot line\nFrom me\nlast"
ARRIVAL = 1700000000.0


def settings(flags: str = "", eol: bytes = b"\n") -> PipeSettings:
    return PipeSettings(("/bin/cat",), WHO, frozenset(flags), eol=eol)


def test_no_flags_adds_only_a_final_newline() -> None:
    assert build(CONTENT, settings(), sender="s@x", recipient="r@y", original="o@y",
                 arrival=ARRIVAL) == CONTENT + b"\n"


def test_headers_in_order() -> None:
    data = build(CONTENT, settings("DORF"), sender="s@x", recipient="R@Y", original="o@y", arrival=ARRIVAL)
    stamp = time.asctime(time.localtime(ARRIVAL))
    assert data == (f"From s@x {stamp}\n".encode() + b"Return-Path: <s@x>\nX-Original-To: o@y\n"
                    b"Delivered-To: r@y\n" + CONTENT + b"\n")


@pytest.mark.parametrize("flags, eol, expected", [
    (".", b"\n", b"Subject: s\n\n..dot line\nFrom me\nlast\n"),
    (">", b"\n", b"Subject: s\n\n.dot line\n>From me\nlast\n"),
    ("B", b"\n", CONTENT + b"\n\n"),
    ("", b"\r\n", CONTENT.replace(b"\n", b"\r\n") + b"\r\n"),
])
def test_line_flags_and_eol(flags: str, eol: bytes, expected: bytes) -> None:
    assert build(CONTENT, settings(flags, eol), sender="s@x", recipient="r@y", original="r@y",
                 arrival=ARRIVAL) == expected


def test_D_and_O_need_one_recipient() -> None:
    assert single_recipient_problem(settings("DR"), 2, "dovecot") == \
        "pipe flag `D' requires dovecot_destination_recipient_limit = 1"
    assert "`O'" in single_recipient_problem(settings("O"), 3, "x")
    assert single_recipient_problem(settings("DO"), 1, "x") == ""
    assert single_recipient_problem(settings("Rq"), 50, "x") == ""
