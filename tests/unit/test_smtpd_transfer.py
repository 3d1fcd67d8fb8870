"""DATA and BDAT through a session: byte-faithful content, smuggling, bare
LF policies, disconnects, and the handoff to cleanup."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_smtpd_harness import RawClient, SmtpdHarness, greet

pytest_plugins = ["test_smtpd_harness"]   # the smtpd, smtpd_factory and tls_cert fixtures

SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n", b"\r.\r\n", b"\r\n.\n"]
SMUGGLED = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled text\r\n")


def open_data(c: RawClient, rcpt: str = "alice@test.example") -> None:
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"


@pytest.mark.parametrize("marker", SMUGGLING, ids=repr)
def test_smuggling_yields_one_message(smtpd: SmtpdHarness, marker: bytes) -> None:
    c = smtpd.connect()
    greet(c)
    open_data(c)
    c.send(b"Subject: one\r\n\r\nfirst" + marker + SMUGGLED + b".\r\nQUIT\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued as")
    assert c.reply() == "221 2.0.0 Bye"
    assert c.closed()
    smtpd.wait_log(r"disconnect from .* quit=1 commands=5")
    msg, = smtpd.cleanup.queued()
    assert len(smtpd.cleanup.messages) == 1
    assert [r.address for r in msg.envelope.recipients] == ["alice@test.example"]
    assert b"MAIL FROM:<evil@example.org>" in msg.content
    assert b"smuggled text" in msg.content


def test_smuggling_rejected_under_reject_policy(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_forbid_bare_newline="reject", smtpd_forbid_bare_newline_exclusions="")
    c = h.connect()
    greet(c)
    open_data(c)
    c.send(b"first\n.\n" + SMUGGLED + b".\r\n")
    assert c.reply() == "550 5.5.2 Error: bare <LF> received"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd(b"NOOP\n") == "550 5.5.2 Error: bare <LF> received"
    assert not h.cleanup.queued()
    h.wait_log(r"reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 550 5\.5\.2 Error: bare "
               r"<LF> received")


def test_reject_policy_spares_exclusions(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_forbid_bare_newline="reject",
                      smtpd_forbid_bare_newline_exclusions="127.0.0.1")
    c = h.connect()
    greet(c)
    open_data(c)
    assert c.cmd(b"a\nb\r\n.\r\n").startswith("250 2.0.0 Ok: queued")
    assert h.wait_messages(1)[0].content == b"a\nb\n"


def test_bare_lf_commands_and_data_normalized(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    c.reply()
    assert c.cmd(b"EHLO lf.example\n").startswith("250-")
    assert c.cmd(b"MAIL FROM:<a@example.org>\n") == "250 2.1.0 Ok"
    assert c.cmd(b"RCPT TO:<alice@test.example>\n") == "250 2.1.5 Ok"
    assert c.cmd(b"DATA\n").startswith("354")
    # ".\n" does not end the data; only CRLF . CRLF does.
    assert c.cmd(b"line one\nline two\n.\nstill data\r\n.\r\n").startswith("250 2.0.0 Ok: queued")
    assert smtpd.wait_messages(1)[0].content == b"line one\nline two\n.\nstill data\n"


def test_byte_faithful_content(smtpd: SmtpdHarness) -> None:
    body = (b"Subject: bytes\r\n\r\n"
            b"..leading dot was stuffed\r\n"
            b"...two dots\r\n"
            b"middle . dot\r\n"
            b"8bit \xe9\xff\x80 and NUL \x00 and bare CR \r here\r\n"
            b"trailing spaces   \r\n"
            b"\r\n"
            b"..\r\n")
    c = smtpd.connect()
    greet(c)
    open_data(c)
    assert c.cmd(body + b".\r\n").startswith("250 2.0.0 Ok: queued")
    assert smtpd.wait_messages(1)[0].content == (
        b"Subject: bytes\n\n"
        b".leading dot was stuffed\n"
        b"..two dots\n"
        b"middle . dot\n"
        b"8bit \xe9\xff\x80 and NUL \x00 and bare CR \r here\n"
        b"trailing spaces   \n"
        b"\n"
        b".\n")


def test_large_message_streams(smtpd: SmtpdHarness) -> None:
    line = b"0123456789" * 7 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 140000          # about 10 MB on the wire
    c = smtpd.connect()
    greet(c)
    open_data(c)
    c.send(body + b".\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued")
    msg, = smtpd.wait_messages(1)
    assert msg.content == body.replace(b"\r\n", b"\n")


def test_disconnect_mid_data_queues_nothing(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    open_data(c)
    c.send(b"Subject: cut\r\n\r\n" + b"x" * 100000 + b"\r\n")
    c.close()
    smtpd.wait_log(r"lost connection after DATA \(\d+ bytes\) from localhost\[127\.0\.0\.1\]")
    smtpd.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=0/1 "
                   r"commands=3/4")
    assert smtpd.cleanup.messages and not smtpd.cleanup.queued()


def test_disconnect_after_final_dot_still_queues(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    open_data(c)
    c.send(b"Subject: fire and forget\r\n\r\nx\r\n.\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued")
    c.close()
    assert len(smtpd.wait_messages(1)) == 1


# -- BDAT ----------------------------------------------------------------------

def test_bdat_chunks(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    first = b"Subject: chunked\r\n\r\nno end marker here:\r\n.\r\nstill content\r"
    assert c.cmd(b"BDAT %d\r\n" % len(first) + first) == f"250 2.0.0 Ok: {len(first)} bytes"
    second = b"\nbinary \x00\xff\n"
    assert c.cmd(b"BDAT %d LAST\r\n" % len(second) + second).startswith("250 2.0.0 Ok: queued as")
    msg, = smtpd.wait_messages(1)
    assert msg.content == b"Subject: chunked\n\nno end marker here:\n.\nstill content\nbinary \x00\xff\n"
    assert msg.envelope.attrs["body"] == "BINARYMIME"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    smtpd.wait_log(r"ehlo=1 mail=1 rcpt=1 bdat=2 quit=1 commands=6")


def test_bdat_pipelined_with_zero_last(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@test.example>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n")
    assert [c.reply() for _ in range(4)][:3] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: 5 bytes"]
    assert c.reply() == "221 2.0.0 Bye"
    assert smtpd.wait_messages(1)[0].content == b"hello"


def test_bdat_refused_chunk_is_still_read(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd(b"BDAT 12\r\nNOOP\r\nNOOP\r\n") == "503 5.5.1 Error: need RCPT command"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd(b"BDAT 4 LAST\r\nabcd") == "503 5.5.1 Error: need RCPT command"


def test_bdat_too_big_and_mixing(smtpd_factory: Any) -> None:
    h = smtpd_factory(message_size_limit="100")
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd(b"BDAT 10\r\n0123456789") == "250 2.0.0 Ok: 10 bytes"
    assert c.cmd("DATA") == "503 5.5.1 Error: DATA and BDAT cannot be mixed in one transaction"
    assert c.cmd("RCPT TO:<bob@test.example>").startswith("503 5.5.1")
    assert c.cmd(b"BDAT 200\r\n" + b"x" * 200) == "552 5.3.4 Message size exceeds fixed limit"
    assert c.cmd(b"BDAT 3 LAST\r\nabc") == "552 5.3.4 Message size exceeds fixed limit"
    assert c.cmd("RCPT TO:<bob@test.example>") == "503 5.5.1 Error: need MAIL command"
    assert not h.cleanup.queued()


def test_bdat_disconnect_queues_nothing(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd(b"BDAT 3\r\nabc") == "250 2.0.0 Ok: 3 bytes"
    c.send(b"BDAT 100 LAST\r\nonly part")
    c.close()
    smtpd.wait_log(r"lost connection after BDAT from localhost")
    deadline = time.monotonic() + 5
    while smtpd.cleanup.messages == [] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert smtpd.cleanup.messages and not smtpd.cleanup.queued()


def test_rset_drops_bdat_message(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd(b"BDAT 3\r\nabc") == "250 2.0.0 Ok: 3 bytes"
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd(b"BDAT 3 LAST\r\nabc") == "503 5.5.1 Error: need RCPT command"
    assert not smtpd.cleanup.queued()
