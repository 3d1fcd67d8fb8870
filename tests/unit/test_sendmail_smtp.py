"""sendmail -bs: the stdin/stdout SMTP session, driven with scripted input."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from postpy.cli.sendmail_smtp import SessionSettings, StdioSession
from postpy.queue import qfile
from postpy.queue.maildrop import MaildropError


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.messages: list[tuple[str, list[qfile.Recipient], bytes, dict[str, str]]] = []
        self.fail = fail

    def __call__(self, sender: str, rcpts: list[qfile.Recipient], content: Iterator[bytes],
                 attrs: dict[str, str]) -> str:
        data = b"".join(content)          # consume it, as the maildrop writer does
        if self.fail:
            raise self.fail
        self.messages.append((sender, rcpts, data, attrs))
        return f"QUEUEID{len(self.messages)}.0123abcd"


def session(script: bytes, recorder: Recorder | None = None, **settings: object) -> tuple[list[str], Recorder]:
    recorder = recorder or Recorder()
    out = io.BytesIO()
    cfg = SessionSettings(hostname="mx.test", banner="mx.test ESMTP postpy")
    for key, value in settings.items():
        setattr(cfg, key, value)
    status = StdioSession(cfg, io.BytesIO(script), out, recorder).run()
    assert status == 0
    return out.getvalue().decode().split("\r\n")[:-1], recorder


def codes(lines: list[str]) -> list[str]:
    return [line[:3] for line in lines if line[3:4] == " "]


def test_a_whole_transaction() -> None:
    lines, rec = session(b"EHLO client\r\nMAIL FROM:<alice@x.example>\r\nRCPT TO:<bob@y.example>\r\n"
                         b"RCPT TO:<carol> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@z\r\n"
                         b"DATA\r\nSubject: hi\r\n\r\n..dotted\r\nline\r\n.\r\nQUIT\r\n")
    assert lines[0] == "220 mx.test ESMTP postpy"
    assert "250-PIPELINING" in lines and "250 SMTPUTF8" in lines and "250-SIZE 10240000" in lines
    assert codes(lines)[-5:] == ["250", "250", "354", "250", "221"]
    assert lines[-2] == "250 2.0.0 Ok: queued as QUEUEID1"
    sender, rcpts, data, attrs = rec.messages[0]
    assert sender == "alice@x.example"
    assert [(r.address, r.notify, r.orcpt) for r in rcpts] == [
        ("bob@y.example", "", ""), ("carol", "SUCCESS,FAILURE", "rfc822;carol@z")]
    assert data == b"Subject: hi\n\n.dotted\nline\n"
    assert attrs == {}


def test_bare_lf_client_and_pipelining() -> None:
    lines, rec = session(b"HELO c\nMAIL FROM:<> BODY=8BITMIME RET=HDRS ENVID=x+2By\n"
                         b"RCPT TO:<a@b>\nDATA\nbody \xff\n.\nMAIL FROM:<s@x>\nRCPT TO:<c@d>\n"
                         b"DATA\nsecond\n.\nQUIT\n")
    assert codes(lines) == ["220", "250", "250", "250", "354", "250", "250", "250", "354", "250", "221"]
    assert [m[2] for m in rec.messages] == [b"body \xff\n", b"second\n"]
    assert rec.messages[0][0] == "" and rec.messages[0][3] == {"ret": "HDRS", "envid": "x+y", "body": "8BITMIME"}


@pytest.mark.parametrize("script, expected", [
    (b"RCPT TO:<a@b>\r\n", "503 5.5.1 Error: need MAIL command"),
    (b"MAIL FROM:<a@b>\r\nDATA\r\n", "503 5.5.1 Error: need RCPT command"),
    (b"MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n", "503 5.5.1 Error: nested MAIL command"),
    (b"MAIL FROM:<a b>\r\n", "501 5.1.7 Bad sender address syntax"),
    (b"MAIL TO:<a@b>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL FROM:<a@b> SIZE=99999999999\r\n", "552 5.3.4 Message size exceeds fixed limit"),
    (b"MAIL FROM:<a@b> FOO=bar\r\n", "555 5.5.4 Unsupported option: FOO"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (b"MAIL FROM:<a@b>\r\nRCPT TO:<\xc3\xbc@b>\r\n", "553 5.6.7"),
    (b"HELO\r\n", "501 5.5.4 Syntax: HELO hostname"),
    (b"EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname"),
    (b"STARTTLS\r\n", "502 5.5.1 Error: command not implemented"),
    (b"BDAT 10 LAST\r\n", "502 5.5.1 Error: command not implemented"),
    (b"FOO\r\n", "502 5.5.2 Error: command not recognized"),
    (b"\r\n", "500 5.5.2 Error: bad syntax"),
    (b"VRFY bob\r\n", "502 5.5.1 VRFY command is disabled"),
    (b"RSET x\r\n", "501 5.5.4 Syntax: RSET"),
    (b"NOOP\r\n", "250 2.0.0 Ok"),
    (b"X" * 5000 + b"\r\nNOOP\r\n", "500 5.5.2 Error: line too long"),
])
def test_errors(script: bytes, expected: str) -> None:
    lines, rec = session(script + b"QUIT\r\n")
    assert any(line.startswith(expected) for line in lines), lines
    assert lines[-1].startswith("221") and not rec.messages


def test_rset_forgets_the_transaction() -> None:
    lines, rec = session(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nDATA\r\nQUIT\r\n")
    assert "503 5.5.1 Error: need MAIL command" in lines and not rec.messages


def test_too_big_message_is_refused_and_session_continues() -> None:
    script = (b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + b"x" * 100 + b"\r\n" * 50
              + b".\r\nNOOP\r\nQUIT\r\n")
    lines, rec = session(script, size_limit=64)
    assert "552 5.3.4 Message size exceeds fixed limit" in lines
    assert codes(lines)[-2:] == ["250", "221"] and not rec.messages


def test_write_failure_is_a_temporary_error() -> None:
    lines, _ = session(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
                       Recorder(fail=MaildropError("disk full")))
    assert "451 4.3.0 Error: queue file write error" in lines


def test_end_of_input_in_data_queues_nothing() -> None:
    lines, rec = session(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial message\r\n")
    assert codes(lines)[-1] == "354" and not rec.messages


def test_too_many_recipients() -> None:
    script = b"MAIL FROM:<a@b>\r\n" + b"".join(b"RCPT TO:<r%d@x>\r\n" % i for i in range(4)) + b"QUIT\r\n"
    lines, _ = session(script, recipient_limit=3)
    assert codes(lines).count("452") == 1


def test_error_limit_ends_the_session() -> None:
    lines, _ = session(b"FOO\r\n" * 10, error_limit=3)
    assert lines[-1].startswith("421 4.7.0 mx.test Error: too many errors")
    assert codes(lines).count("502") == 3


def test_long_data_lines_pass_unchanged() -> None:
    body = b"y" * 200_000 + b"\r\n" + b"\r" * 3 + b"z\r\n"
    _, rec = session(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + body + b".\r\nQUIT\r\n")
    assert rec.messages[0][2] == b"y" * 200_000 + b"\n" + b"\r" * 3 + b"z\n"


def test_vrfy_when_enabled() -> None:
    lines, _ = session(b"VRFY bob\r\nQUIT\r\n", vrfy=True)
    assert "252 2.0.0 bob" in lines
