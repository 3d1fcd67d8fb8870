"""pipe(8) macros and flags on the command line (postpy.pipe.expand)."""

from __future__ import annotations

import pytest

from postpy.config.maincf import ConfigError
from postpy.pipe.expand import (
    check_macros,
    expand_argv,
    expand_word,
    recipient_values,
    show_address,
)

MESSAGE = {"sender": "s@example.org", "nexthop": "Dummy", "queue_id": "ABC", "size": "42",
           "client_address": "192.0.2.1", "client_helo": "helo.example"}


@pytest.mark.parametrize("word, expected", [
    ("-f", "-f"),
    ("${sender}", "s@example.org"),
    ("$sender", "s@example.org"),
    ("<${sender}>", "<s@example.org>"),
    ("id=${queue_id},size=$size", "id=ABC,size=42"),
    ("${client_address?from }${client_address}", "from 192.0.2.1"),
    ("${sasl_username?auth}", ""),
    ("${sasl_username:anonymous}", "anonymous"),
    ("${client_helo:unknown}", ""),
    ("$$5", "$5"),
])
def test_expand_word(word: str, expected: str) -> None:
    check_macros(word)
    assert expand_word(word, MESSAGE) == expected


@pytest.mark.parametrize("word", ["${nosuch}", "$nosuch", "${sender", "x$", "${sender?a{b}"])
def test_bad_words(word: str) -> None:
    with pytest.raises(ConfigError):
        check_macros(word)


def test_recipient_words_expand_once_per_recipient() -> None:
    rcpts = [recipient_values("Alice+Box@Test.Example", "", frozenset(), "+"),
             recipient_values("bob@test.example", "root@test.example", frozenset(), "+")]
    argv = expand_argv(["/bin/x", "-f", "${sender}", "--", "${recipient}", "u=${user}"], MESSAGE, rcpts)
    assert argv == ["/bin/x", "-f", "s@example.org", "--", "Alice+Box@Test.Example", "bob@test.example",
                    "u=Alice", "u=bob"]


def test_recipient_values_and_folding() -> None:
    plain = recipient_values("Alice+Box@Test.Example", "Orig@Test.Example", frozenset(), "+")
    assert plain == {"recipient": "Alice+Box@Test.Example", "original_recipient": "Orig@Test.Example",
                     "mailbox": "Alice+Box", "user": "Alice", "extension": "Box", "domain": "Test.Example"}
    folded = recipient_values("Alice+Box@Test.Example", "", frozenset("hu"), "+")
    assert folded == {"recipient": "alice+box@test.example", "original_recipient": "alice+box@test.example",
                      "mailbox": "alice+box", "user": "alice", "extension": "box", "domain": "test.example"}
    assert recipient_values("Alice@Test.Example", "", frozenset("u"), "+")["recipient"] == "alice@Test.Example"
    assert recipient_values("Alice@Test.Example", "", frozenset("h"), "")["recipient"] == "Alice@test.example"


@pytest.mark.parametrize("address, flags, expected", [
    ('"john smith"@example.org', "", "john smith@example.org"),
    ('"john smith"@example.org', "q", '"john smith"@example.org'),
    ("plain@example.org", "q", "plain@example.org"),
    ("", "", "MAILER-DAEMON"),
    ("localonly", "u", "localonly"),
])
def test_show_address(address: str, flags: str, expected: str) -> None:
    assert show_address(address, frozenset(flags), null="MAILER-DAEMON") == expected
