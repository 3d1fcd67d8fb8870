"""Relay control through a session: a client outside mynetworks (127.0.0.2,
with mynetworks = 127.0.0.1/32) must not relay, whatever the address trick."""

from __future__ import annotations

import re

import pytest
from test_smtpd_harness import SmtpdHarness, greet

pytest_plugins = ["test_smtpd_harness"]   # the smtpd, smtpd_factory and tls_cert fixtures

OUTSIDE = "127.0.0.2"

# Each address tries to route mail off this host; "a@b@c" is not even an
# address (an unquoted "@" in the local part) and fails as syntax.
TRICKS = [
    ("victim@elsewhere.example", 554),
    ("victim%elsewhere.example@test.example", 554),
    ("elsewhere.example!victim@test.example", 554),
    ('"victim@elsewhere.example"@test.example', 554),
    ("@test.example:victim@elsewhere.example", 554),
    ("@test.example,@mx.test.example:victim@elsewhere.example", 554),
    ("victim%elsewhere.example@localhost", 554),
    ("elsewhere.example!victim", 554),
    ("victim@[192.0.2.1]", 554),
    ("victim@elsewhere.example@test.example", 501),
]


@pytest.mark.parametrize(("address", "code"), TRICKS)
def test_relay_trick_refused_from_outside(smtpd: SmtpdHarness, address: str, code: int) -> None:
    c = smtpd.connect(OUTSIDE)
    greet(c, "outside.example")
    assert c.cmd("MAIL FROM:<spammer@example.net>") == "250 2.1.0 Ok"
    reply = c.cmd(f"RCPT TO:<{address}>")
    if code == 554:
        assert reply == f"554 5.7.1 <{address}>: Relay access denied"
        smtpd.wait_log(
            r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.2\]: 554 5\.7\.1 <"
            + re.escape(address) + r">: Relay access denied; from=<spammer@example\.net> to=<"
            + re.escape(address) + r"> proto=ESMTP helo=<outside\.example>")
    else:
        assert reply == "501 5.1.3 Bad recipient address syntax"
    assert c.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
    assert not smtpd.cleanup.messages


def test_local_delivery_allowed_from_outside(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect(OUTSIDE)
    greet(c)
    assert c.cmd("MAIL FROM:<friend@example.net>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<Bob@MX.Test.Example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<carol+lists@localhost>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<postmaster>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<@elsewhere.example:alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<alice@[127.0.0.1]>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<mallory@test.example>") == (
        "550 5.1.1 <mallory@test.example>: Recipient address rejected: User unknown in local "
        "recipient table")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"hi\r\n.\r\n").startswith("250 2.0.0 Ok: queued")
    msg, = smtpd.wait_messages(1)
    assert [r.address for r in msg.envelope.recipients] == [
        "alice@test.example", "Bob@MX.Test.Example", "carol+lists@localhost", "postmaster",
        "alice@test.example", "alice@[127.0.0.1]"]
    assert msg.envelope.attrs["client_addr"] == OUTSIDE
    assert "rewrite" not in msg.envelope.attrs
    smtpd.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.2\]: 550 5\.1\.1 "
                   r"<mallory@test\.example>: Recipient address rejected: User unknown in local "
                   r"recipient table; from=<friend@example\.net> to=<mallory@test\.example> "
                   r"proto=ESMTP helo=<client\.example>")


def test_relay_allowed_from_mynetworks(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect("127.0.0.1")
    greet(c)
    assert c.cmd("MAIL FROM:<me@test.example>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<friend@elsewhere.example>") == "250 2.1.5 Ok"
    # Routing tricks are not relayed even from inside: the local part is unknown here.
    assert c.cmd("RCPT TO:<friend%elsewhere.example@test.example>").startswith("550 5.1.1")
    assert c.cmd('RCPT TO:<"friend@elsewhere.example"@test.example>').startswith("550 5.1.1")
