"""The SMTP dialogue, reply by reply: commands, sequence, syntax, limits, logs.

Runs the real session code against a recording cleanup stand-in (see
test_smtpd_harness); the integration tests repeat the essentials against a
started system.
"""

from __future__ import annotations

import smtplib
import time
from typing import Any

import pytest
from test_smtpd_harness import RawClient, SmtpdHarness, greet

pytest_plugins = ["test_smtpd_harness"]   # the smtpd, smtpd_factory and tls_cert fixtures


def transaction(c: RawClient, sender: str = "a@example.org",
                rcpts: tuple[str, ...] = ("alice@test.example",)) -> None:
    assert c.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
    for rcpt in rcpts:
        assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"


def test_greeting_and_ehlo(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    assert c.reply() == "220 mx.test.example ESMTP postpy"
    assert c.cmd("EHLO client.example").split("\n") == [
        "250-mx.test.example", "250-PIPELINING", "250-SIZE 10240000", "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME", "250-DSN", "250-SMTPUTF8", "250 CHUNKING"]
    assert c.cmd("HELO client.example") == "250 mx.test.example"


def test_ehlo_follows_settings(smtpd_factory: Any) -> None:
    h = smtpd_factory(message_size_limit="0", disable_vrfy_command="no", smtputf8_enable="no")
    c = h.connect()
    c.reply()
    lines = c.cmd("EHLO x").split("\n")
    assert "250-SIZE" in lines and "250-VRFY" in lines
    assert not any("SMTPUTF8" in line for line in lines)


# (command, reply) in a fresh session after EHLO
SIMPLE = [
    ("HELO", "501 5.5.4 Syntax: HELO hostname"),
    ("EHLO", "501 5.5.4 Syntax: EHLO hostname"),
    ("NOOP", "250 2.0.0 Ok"),
    ("NOOP anything", "250 2.0.0 Ok"),
    ("RSET", "250 2.0.0 Ok"),
    ("RSET now", "501 5.5.4 Syntax: RSET"),
    ("QUIT now", "501 5.5.4 Syntax: QUIT"),
    ("HELP", "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT"),
    ("VRFY alice", "502 5.5.1 VRFY command is disabled"),
    ("RCPT TO:<alice@test.example>", "503 5.5.1 Error: need MAIL command"),
    ("DATA", "503 5.5.1 Error: need RCPT command"),
    ("DATA now", "501 5.5.4 Syntax: DATA"),
    ("BDAT x", "501 5.5.4 Syntax: BDAT count [LAST]"),
    ("STARTTLS", "502 5.5.1 Error: command not implemented"),
    ("XYZZY", "502 5.5.2 Error: command not recognized"),
    ("EXPN staff", "502 5.5.1 Error: command not implemented"),
    ("AUTH PLAIN", "503 5.5.1 Error: authentication not enabled"),
    ("", "500 5.5.2 Error: bad syntax"),
    ("MAIL FROM:alice@example.org", "250 2.1.0 Ok"),
    ("MAIL FROM:<>", "250 2.1.0 Ok"),
    ("MAIL TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("MAIL FROM:<a b@example.org>", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<a@b.example> FOO=bar", "555 5.5.4 Unsupported option: FOO"),
    ("MAIL FROM:<a@b.example> SIZE=20000000", "552 5.3.4 Message size exceeds fixed limit"),
    ("MAIL FROM:<a@b.example> BODY=9BIT", "501 5.5.4 Bad BODY keyword value"),
    ("MAIL FROM:<jörg@bücher.example>", "553 5.6.7 Must declare SMTPUTF8 to send unicode address"),
    ("MAIL FROM:<jörg@bücher.example> SMTPUTF8", "250 2.1.0 Ok"),
]


@pytest.mark.parametrize(("command", "reply"), SIMPLE)
def test_simple_commands(smtpd: SmtpdHarness, command: str, reply: str) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd(command) == reply


def test_sequence_errors(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("MAIL FROM:<a@example.org>") == "503 5.5.1 Error: nested MAIL command"
    assert c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
    assert c.cmd("RCPT TO:<nobody@test.example>").startswith("550 5.1.1")
    assert c.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
    assert c.cmd("RCPT TO:<>") == "501 5.1.3 Bad recipient address syntax"
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "503 5.5.1 Error: need MAIL command"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    assert c.closed()
    smtpd.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1/2 rcpt=0/3 "
                   r"data=0/2 rset=1 quit=1 commands=4/10")


def test_vrfy_when_enabled(smtpd_factory: Any) -> None:
    h = smtpd_factory(disable_vrfy_command="no")
    c = h.connect()
    greet(c)
    assert c.cmd("VRFY alice") == "252 2.0.0 alice"
    assert c.cmd("VRFY <bob@test.example>") == "252 2.0.0 bob@test.example"
    assert c.cmd("VRFY nobody").startswith("550 5.1.1 <nobody>: Recipient address rejected")
    assert c.cmd("VRFY") == "501 5.5.4 Syntax: VRFY address"


def test_helo_is_enough_and_protocol_is_smtp(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    assert c.reply().startswith("220")
    assert c.cmd("HELO old.example") == "250 mx.test.example"
    transaction(c)
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"x\r\n.\r\n").startswith("250 2.0.0 Ok: queued as")
    msg, = smtpd.wait_messages(1)
    assert msg.envelope.attrs["protocol"] == "SMTP"
    assert msg.envelope.attrs["helo"] == "old.example"


def test_forbidden_command_disconnects(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    c.reply()
    assert c.cmd("GET / HTTP/1.0") == "421 4.7.0 mx.test.example Error: I can break rules, too. Goodbye."
    assert c.closed()
    smtpd.wait_log(r"warning: non-SMTP command from localhost\[127\.0\.0\.1\]: GET / HTTP/1\.0")


def test_smtplib_full_transaction_with_dsn(smtpd: SmtpdHarness) -> None:
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as s:
        s.ehlo("client.example")
        refused = s.sendmail("sender@example.org", ["alice@test.example", "bob+x@test.example"],
                             b"Subject: dsn\r\n\r\nbody\r\n",
                             mail_options=["RET=HDRS", "ENVID=id+2B1", "BODY=8BITMIME"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;alice@test.example"])
        assert refused == {}
    msg, = smtpd.wait_messages(1)
    env = msg.envelope
    assert env.sender == "sender@example.org"
    assert [(r.address, r.notify, r.orcpt) for r in env.recipients] == [
        ("alice@test.example", "SUCCESS,FAILURE", "rfc822;alice@test.example"),
        ("bob+x@test.example", "SUCCESS,FAILURE", "rfc822;alice@test.example")]
    assert env.attrs["envid"] == "id+1" and env.attrs["ret"] == "HDRS"
    assert env.attrs["body"] == "8BITMIME" and env.attrs["protocol"] == "ESMTP"
    assert env.attrs["client_addr"] == "127.0.0.1" and env.attrs["rewrite"] == "yes"
    assert msg.content == b"Subject: dsn\n\nbody\n"


def test_smtputf8_message(smtpd: SmtpdHarness) -> None:
    body = "Subject: grüße\r\n\r\nçava ☃\r\n".encode()
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as s:
        s.ehlo()
        assert s.mail("jörg@bücher.example", ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
        assert s.rcpt("alice@test.example")[0] == 250
        assert s.data(body)[0] == 250
    msg, = smtpd.wait_messages(1)
    assert msg.envelope.sender == "jörg@bücher.example"
    assert msg.envelope.attrs["smtputf8"] == "yes"
    assert msg.content == body.replace(b"\r\n", b"\n")


def test_pipelining_replies_in_order(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@test.example>\r\n"
           b"RCPT TO:<nobody@test.example>\r\nRCPT TO:<bob@test.example>\r\nNOOP\r\nDATA\r\n")
    assert [c.reply() for _ in range(6)] == [
        "250 2.1.0 Ok", "250 2.1.5 Ok",
        "550 5.1.1 <nobody@test.example>: Recipient address rejected: User unknown in local "
        "recipient table",
        "250 2.1.5 Ok", "250 2.0.0 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    c.send(b"Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<carol@test.example>\r\nDATA\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued as")
    assert [c.reply() for _ in range(3)] == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                               "354 End data with <CR><LF>.<CR><LF>"]
    c.send(b"y\r\n.\r\nQUIT\r\n")
    assert c.reply().startswith("250 2.0.0 Ok: queued as")
    assert c.reply() == "221 2.0.0 Bye"
    first, second = smtpd.wait_messages(2)
    assert [r.address for r in first.envelope.recipients] == ["alice@test.example", "bob@test.example"]
    assert second.envelope.sender == "" and second.content == b"y\n"


def test_recipient_limit(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_recipient_limit="2")
    c = h.connect()
    greet(c)
    transaction(c, rcpts=("alice@test.example", "bob@test.example"))
    assert c.cmd("RCPT TO:<carol@test.example>") == "452 4.5.3 Error: too many recipients"


def test_size_limit_while_reading(smtpd_factory: Any) -> None:
    h = smtpd_factory(message_size_limit="1000")
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=999") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: big\r\n\r\n" + b"x" * 80 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 20
                 + b".\r\n") == "552 5.3.4 Message size exceeds fixed limit"
    # The session goes on, and a small message still fits.
    transaction(c)
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"small\r\n.\r\n").startswith("250 2.0.0 Ok: queued as")
    assert [m.content for m in h.wait_messages(1)] == [b"small\n"]
    assert len(h.cleanup.messages) == 2
    h.wait_log(r"reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 552 5\.3\.4 Message size "
               r"exceeds fixed limit; from=<a@example\.org> proto=ESMTP helo=<client\.example>")


def test_size_limit_from_size_parameter_is_logged(smtpd_factory: Any) -> None:
    h = smtpd_factory(message_size_limit="1000")
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=1001") == "552 5.3.4 Message size exceeds fixed limit"
    h.wait_log(r"NOQUEUE: reject: MAIL from localhost\[127\.0\.0\.1\]: 552 5\.3\.4 Message size "
               r"exceeds fixed limit; proto=ESMTP helo=<client\.example>")


def test_command_line_limit(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("NOOP " + "x" * 3000) == "500 5.5.2 Error: line too long"
    assert c.cmd("NOOP " + "x" * 2000) == "250 2.0.0 Ok"


def test_timeout(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_timeout="1")
    c = h.connect()
    assert c.reply().startswith("220")
    started = time.monotonic()
    assert c.reply() == "421 4.4.2 mx.test.example Error: timeout exceeded"
    assert time.monotonic() - started < 5
    assert c.closed()
    h.wait_log(r"timeout after CONNECT from localhost\[127\.0\.0\.1\]")


def test_timeout_in_data_queues_nothing(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_timeout="1")
    c = h.connect()
    greet(c)
    transaction(c)
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: slow\r\n\r\npart")
    assert c.reply() == "421 4.4.2 mx.test.example Error: timeout exceeded"
    h.wait_log(r"timeout after DATA \(\d+ bytes\) from localhost")
    assert h.cleanup.messages and not h.cleanup.queued()


def test_hard_error_limit(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_hard_error_limit="3")
    c = h.connect()
    greet(c)
    for _ in range(3):
        assert c.cmd("BOGUS").startswith("502")
    assert c.reply() == "421 4.7.0 mx.test.example Error: too many errors"
    assert c.closed()
    h.wait_log(r"too many errors after UNKNOWN from localhost\[127\.0\.0\.1\]")
    h.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 unknown=0/3 commands=1/4")


def test_soft_error_limit_slows_replies(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_soft_error_limit="1", smtpd_error_sleep_time="0.3")
    c = h.connect()
    greet(c)
    assert c.cmd("BOGUS").startswith("502")
    started = time.monotonic()
    assert c.cmd("BOGUS").startswith("502")
    assert time.monotonic() - started >= 0.25


def test_connection_count_limit(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_connection_count_limit="2")
    first, second = h.connect(), h.connect()
    assert first.reply().startswith("220") and second.reply().startswith("220")
    third = h.connect()
    assert third.reply() == "421 4.7.0 mx.test.example Error: too many connections from 127.0.0.1"
    assert third.closed()
    h.wait_log(r"warning: Connection concurrency limit exceeded: 3 from localhost\[127\.0\.0\.1\] "
               r"for service smtpd")
    # Another address has its own count.
    other = h.connect("127.0.0.3")
    assert other.reply().startswith("220")
    assert first.cmd("QUIT").startswith("221") and first.closed()
    h.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] quit=1")
    fourth = h.connect()
    assert fourth.reply().startswith("220")


def test_connection_limit_exceptions(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_connection_count_limit="1",
                      smtpd_client_event_limit_exceptions="127.0.0.1")
    clients = [h.connect() for _ in range(3)]
    assert all(c.reply().startswith("220") for c in clients)


def test_queue_minfree(smtpd_factory: Any) -> None:
    h = smtpd_factory(queue_minfree=str(10**17))
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "452 4.3.1 Insufficient system storage"
    h.wait_log(r"NOQUEUE: reject: MAIL from localhost\[127\.0\.0\.1\]: 452 4\.3\.1 Insufficient "
               r"system storage")


def test_queue_minfree_counts_declared_size(smtpd_factory: Any, tmp_path: Any) -> None:
    import os

    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    h = smtpd_factory(queue_minfree=str(max(free - 10_000_000, 0)), message_size_limit="0")
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=1000") == "250 2.1.0 Ok"
    c.cmd("RSET")
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=900000000000") == "452 4.3.1 Insufficient system storage"


def test_cleanup_unavailable(smtpd: SmtpdHarness) -> None:
    import os

    os.unlink(smtpd.cleanup.path)
    c = smtpd.connect()
    greet(c)
    transaction(c)
    assert c.cmd("DATA") == "451 4.3.0 Error: queue file write error"
    smtpd.wait_log(r"warning: connect to .*private/cleanup")


@pytest.mark.parametrize(("status", "text", "reply"), [
    ("temp", "", "451 4.3.0 Error: queue file write error"),
    ("temp", "4.3.1 Insufficient system storage", "452 4.3.1 Insufficient system storage"),
    ("perm", "5.4.0 too many hops", "554 5.4.0 too many hops"),
    ("perm", "5.3.4 message file too big", "552 5.3.4 message file too big"),
    ("perm", "5.7.1 message content rejected", "550 5.7.1 message content rejected"),
])
def test_cleanup_refusal(smtpd: SmtpdHarness, status: str, text: str, reply: str) -> None:
    smtpd.cleanup.result_status, smtpd.cleanup.result_reply = status, text
    c = smtpd.connect()
    greet(c)
    transaction(c)
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"x\r\n.\r\n") == reply
    smtpd.wait_log(r"TESTQ00001: reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: " + reply[:3])


def test_client_line_logged_with_queue_id(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    transaction(c)
    c.cmd("DATA")
    c.cmd(b"x\r\n.\r\n")
    smtpd.wait_log(r"postpy/smtpd\[\d+\]: TESTQ00001: client=localhost\[127\.0\.0\.1\]")


def test_internal_error_costs_one_session(smtpd: SmtpdHarness, monkeypatch: Any) -> None:
    from postpy.smtpd import session

    async def broken(s: Any, arg: str) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setitem(session.HANDLERS, "NOOP", broken)
    c = smtpd.connect()
    greet(c)
    assert c.cmd("NOOP") == ("421 4.3.0 mx.test.example Error: internal server error, "
                             "closing connection")
    assert c.closed()
    smtpd.wait_log(r"warning: RuntimeError after NOOP from localhost\[127\.0\.0\.1\]: simulated bug")
    other = smtpd.connect()
    greet(other)
    assert other.cmd("RSET") == "250 2.0.0 Ok"


def test_silent_client_disconnect_line(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    assert c.reply().startswith("220")
    c.close()
    smtpd.wait_log(r"lost connection after CONNECT from localhost\[127\.0\.0\.1\]")
    smtpd.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] commands=0/0")
