"""bounce's RFC 3464 composition (postpy.bounce.dsn): pure functions, parsed back with ``email``."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage, Message

import pytest

from postpy.bounce import dsn, texts

CONTENT = (b"Received: by client.example\n"
           b"From: Alice <alice@example.org>\n"
           b"To: bob@example.net\n"
           b"Subject: lunch\n"
           b"Message-ID: <1@example.org>\n"
           b"\n"
           b"Shall we?\n")
REMOTE = ("host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: "
          "Recipient address rejected: User unknown (in reply to RCPT TO command)")


def report(kind: str = texts.FAILURE, content: bytes = CONTENT, *, ret: str = "", limit: int = 50000,
           recipients: list[dsn.ReportedRecipient] | None = None, **kw: object) -> dsn.Report:
    if recipients is None:
        recipients = [dsn.ReportedRecipient("bob@example.net", "failed", "5.1.1", REMOTE,
                                            orcpt="rfc822;Bob@example.net")]
    base: dict[str, object] = dict(
        kind=kind, queue_id="ORIGID", notice_id="NOTICEID", sender="alice@example.org",
        to="alice@example.org", myhostname="mx.test.example", arrival=1_756_116_672.0,
        now=1_756_120_272.0, recipients=recipients,
        returned=dsn.returned_content(content, len(content), kind=kind, ret=ret, limit=limit))
    base.update(kw)
    return dsn.Report(**base)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return msg


def parts(msg: EmailMessage) -> list[Message]:
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    found: list[Message] = list(msg.iter_parts())
    assert len(found) == 3
    return found


def status_blocks(part: Message) -> list[Message]:
    assert part.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def inner_message(part: Message) -> Message:
    payload = part.get_payload()
    assert isinstance(payload, list) and isinstance(payload[0], Message)
    return payload[0]


# -- decisions --------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "notify", "wanted"), [
    (texts.FAILURE, "", True),
    (texts.DELAY, "", True),
    (texts.SUCCESS, "", False),
    (texts.FAILURE, "NEVER", False),
    (texts.DELAY, "NEVER", False),
    (texts.SUCCESS, "NEVER", False),
    (texts.FAILURE, "SUCCESS", False),
    (texts.FAILURE, "FAILURE", True),
    (texts.FAILURE, "delay,failure", True),
    (texts.DELAY, "FAILURE", False),
    (texts.DELAY, "SUCCESS,DELAY", True),
    (texts.SUCCESS, "SUCCESS", True),
    (texts.SUCCESS, "FAILURE, SUCCESS", True),
    (texts.SUCCESS, "FAILURE,DELAY", False),
])
def test_wants_notice(kind: str, notify: str, wanted: bool) -> None:
    assert dsn.wants_notice(kind, notify) is wanted


@pytest.mark.parametrize(("text", "remote", "dtype", "dtext"), [
    (REMOTE, "mx.example.net", "smtp",
     "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"),
    ("host mx.example.net[192.0.2.1]:2526 said: 452 4.2.2 full", "mx.example.net", "smtp", "452 4.2.2 full"),
    ("host mx.example.net[192.0.2.1] refused to talk to me: 554 5.7.1 no thanks", "mx.example.net",
     "smtp", "554 5.7.1 no thanks"),
    ("host mx.example.net[192.0.2.1] said: 354 go on (unexpected reply to MAIL FROM command)",
     "mx.example.net", "smtp", "354 go on"),
    ("host mx.example.net[192.0.2.1] said: nonsense", "", "x-unix",
     "host mx.example.net[192.0.2.1] said: nonsense"),
    ("550 5.7.1 go away", "", "smtp", "550 5.7.1 go away"),
    ("421", "", "smtp", "421"),
    ('unknown user: "carol"', "", "x-unix", 'unknown user: "carol"'),
    ("connect to mx.example.net[192.0.2.1]:25: Connection refused", "", "x-unix",
     "connect to mx.example.net[192.0.2.1]:25: Connection refused"),
    ("line one\nline two\r\n\tthree", "", "x-unix", "line one line two three"),
    ("", "", "x-unix", ""),
    ("5000 not a reply", "", "x-unix", "5000 not a reply"),
])
def test_diagnostic(text: str, remote: str, dtype: str, dtext: str) -> None:
    assert dsn.diagnostic(text) == (remote, dtype, dtext)


@pytest.mark.parametrize(("kind", "recorded", "status"), [
    (texts.FAILURE, "5.1.1", "5.1.1"),
    (texts.FAILURE, "4.4.1", "5.4.1"),        # expired after deferrals: failed, permanent class
    (texts.POSTMASTER, "5.2.2", "5.2.2"),
    (texts.DELAY, "4.4.1", "4.4.1"),
    (texts.DELAY, "5.4.1", "4.4.1"),
    (texts.SUCCESS, "2.0.0", "2.0.0"),
    (texts.FAILURE, "", "5.0.0"),
    (texts.FAILURE, "garbage", "5.0.0"),
    (texts.DELAY, "4.1234.1", "4.0.0"),
    (texts.SUCCESS, "6.0.0", "2.0.0"),
])
def test_reported_status(kind: str, recorded: str, status: str) -> None:
    assert dsn.reported_status(kind, recorded) == status


@pytest.mark.parametrize(("kind", "ret", "limit", "whole"), [
    (texts.FAILURE, "", 50000, True),
    (texts.FAILURE, "FULL", 50000, True),
    (texts.FAILURE, "HDRS", 50000, False),
    (texts.FAILURE, "hdrs", 50000, False),
    (texts.POSTMASTER, "", 50000, True),
    (texts.DELAY, "", 50000, False),
    (texts.DELAY, "FULL", 50000, True),
    (texts.SUCCESS, "", 50000, False),
    (texts.SUCCESS, "FULL", 50000, True),
    (texts.FAILURE, "", 20, False),            # too big: headers only
    (texts.FAILURE, "FULL", 20, False),
    (texts.FAILURE, "", 0, True),              # 0: no limit
])
def test_returned_content_choice(kind: str, ret: str, limit: int, whole: bool) -> None:
    prefix = CONTENT[:limit + 1] if limit else CONTENT
    returned = dsn.returned_content(prefix, len(CONTENT), kind=kind, ret=ret, limit=limit)
    assert returned.whole is whole
    if whole:
        assert returned.data == CONTENT
    else:
        assert returned.data == dsn.cut_at_line(dsn.header_block(CONTENT), limit)
        assert b"Shall we?" not in returned.data


@pytest.mark.parametrize(("content", "header"), [
    (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n"),
    (b"A: 1\n", b"A: 1\n"),
    (b"\nbody only\n", b""),
    (b"", b""),
    (b"A: 1\n folded\n\n\nbody\n", b"A: 1\n folded\n"),
])
def test_header_block(content: bytes, header: bytes) -> None:
    assert dsn.header_block(content) == header


@pytest.mark.parametrize(("data", "limit", "cut"), [
    (b"aaa\nbbb\nccc\n", 0, b"aaa\nbbb\nccc\n"),
    (b"aaa\nbbb\nccc\n", 100, b"aaa\nbbb\nccc\n"),
    (b"aaa\nbbb\nccc\n", 9, b"aaa\nbbb\n"),
    (b"aaa\nbbb\nccc\n", 8, b"aaa\nbbb\n"),
    (b"aaa\nbbb\nccc\n", 7, b"aaa\n"),
    (b"aaaaaaaaaa", 4, b"aaaa\n"),            # no line end at all: hard cut
])
def test_cut_at_line(data: bytes, limit: int, cut: bytes) -> None:
    assert dsn.cut_at_line(data, limit) == cut


def test_fold_keeps_text_and_line_limits() -> None:
    value = "smtp; " + " ".join(f"word{i}" for i in range(60)) + " " + "x" * 2000
    lines = dsn.fold("Diagnostic-Code", value)
    assert all(len(line) <= 998 for line in lines)
    assert all(len(line) <= 78 for line in lines[:-3])
    assert lines[0].startswith("Diagnostic-Code: smtp;")
    assert all(line.startswith(" ") for line in lines[1:])
    unfolded = "".join(lines)
    assert unfolded.replace(" ", "") == ("Diagnostic-Code:" + value).replace(" ", "")


# -- whole notices --------------------------------------------------------------------

def test_failure_notice_structure() -> None:
    data = dsn.compose(report(envid="ENV-42"))
    assert data.startswith(b"From: MAILER-DAEMON@mx.test.example (Mail Delivery System)\n")
    msg = parse(data)
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.test.example"
    assert msg["To"] == "alice@example.org"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<20250825111112.NOTICEID@mx.test.example>"
    assert msg["Date"]
    text, status, original = parts(msg)
    assert text.get_content_type() == "text/plain"
    body = text.get_content()  # type: ignore[attr-defined]
    assert "mx.test.example" in body
    assert "<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1" in body
    per_message, per_rcpt = status_blocks(status)
    assert per_message["Reporting-MTA"] == "dns; mx.test.example"
    assert per_message["X-Postpy-Queue-ID"] == "ORIGID"
    assert per_message["X-Postpy-Sender"] == "rfc822; alice@example.org"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert per_message["Arrival-Date"]
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Original-Recipient"] == "rfc822; Bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert per_rcpt["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown")
    assert per_rcpt["Last-Attempt-Date"]
    assert "Will-Retry-Until" not in per_rcpt
    assert original.get_content_type() == "message/rfc822"
    inner = inner_message(original)
    assert inner["Subject"] == "lunch"
    assert inner.get_payload() == "Shall we?\n"


def test_notice_is_deterministic_lf_only_and_ascii() -> None:
    first, second = dsn.compose(report()), dsn.compose(report())
    assert first == second
    assert b"\r" not in first
    assert first.isascii()
    assert b"Content-Transfer-Encoding: 7bit" in first
    assert all(len(line) <= 998 for line in first.split(b"\n"))


def test_several_recipients_and_local_diagnostics() -> None:
    rcpts = [
        dsn.ReportedRecipient("carol@test.example", "failed", "5.1.1", 'unknown user: "carol"', orig="carol"),
        dsn.ReportedRecipient("dave@test.example", "failed", "5.2.2", "mailbox full"),
        dsn.ReportedRecipient("erin@test.example"),                        # no L record
    ]
    msg = parse(dsn.compose(report(recipients=rcpts)))
    text, status, _ = parts(msg)
    blocks = status_blocks(status)[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; carol@test.example", "rfc822; dave@test.example", "rfc822; erin@test.example"]
    assert [b["Status"] for b in blocks] == ["5.1.1", "5.2.2", "5.0.0"]
    assert blocks[0]["Diagnostic-Code"] == 'x-unix; unknown user: "carol"'
    assert "Remote-MTA" not in blocks[0]
    assert "Original-Recipient" not in blocks[0]
    assert blocks[2]["Diagnostic-Code"] == f"x-unix; {dsn.NO_REASON}"
    body = text.get_content()  # type: ignore[attr-defined]
    assert '<carol@test.example> (expanded from <carol>): unknown user: "carol"' in body
    assert "<dave@test.example>: mailbox full" in body


def test_ret_hdrs_returns_headers_only() -> None:
    msg = parse(dsn.compose(report(ret="HDRS")))
    _, _, original = parts(msg)
    assert original.get_content_type() == "text/rfc822-headers"
    assert original["Content-Description"] == "Undelivered Message Headers"
    returned = original.get_payload()
    assert "Subject: lunch" in returned
    assert "Shall we?" not in returned


def test_too_big_message_returns_headers_only_truncated() -> None:
    many_headers = b"".join(b"X-Filler-%04d: %s\n" % (i, b"y" * 60) for i in range(100))
    content = CONTENT.replace(b"Subject: lunch\n", b"Subject: lunch\n" + many_headers) + b"z" * 100_000
    limit = 1000
    rep = report(content=content[:limit + 1], limit=limit)
    rep.returned = dsn.returned_content(content[:limit + 1], len(content), kind=texts.FAILURE,
                                        ret="", limit=limit)
    data = dsn.compose(rep)
    msg = parse(data)
    _, _, original = parts(msg)
    assert original.get_content_type() == "text/rfc822-headers"
    returned = original.get_payload()
    assert isinstance(returned, str)
    assert len(returned) <= limit
    assert returned.startswith("Received: by client.example\n")
    assert returned.endswith("\n")
    assert "X-Filler-0000" in returned and "X-Filler-0099" not in returned
    assert b"z" * 100 not in data


def test_delay_notice() -> None:
    rcpts = [dsn.ReportedRecipient("bob@example.net", "delayed", "4.4.1",
                                   "connect to mx.example.net[192.0.2.1]:25: Connection refused")]
    rep = report(texts.DELAY, recipients=rcpts, will_retry_until=1_756_116_672.0 + 5 * 86400)
    msg = parse(dsn.compose(rep))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    text, status, original = parts(msg)
    block = status_blocks(status)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"]
    assert "Remote-MTA" not in block
    assert "1 hour" in text.get_content()  # type: ignore[attr-defined]
    assert original.get_content_type() == "text/rfc822-headers"
    assert original["Content-Description"] == "Delayed Message Headers"


def test_success_notice_keeps_relayed_action() -> None:
    rcpts = [dsn.ReportedRecipient("bob@example.net", "relayed", "2.0.0",
                                   "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as X"),
             dsn.ReportedRecipient("carol@test.example", "delivered", "2.0.0", "delivered to mailbox")]
    msg = parse(dsn.compose(report(texts.SUCCESS, recipients=rcpts)))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    _, status, _ = parts(msg)
    first, second = status_blocks(status)[1:]
    assert (first["Action"], first["Status"]) == ("relayed", "2.0.0")
    assert first["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as X"
    assert (second["Action"], second["Diagnostic-Code"]) == ("delivered", "x-unix; delivered to mailbox")


def test_postmaster_notice() -> None:
    msg = parse(dsn.compose(report(texts.POSTMASTER, sender="", to="postmaster")))
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["To"] == "postmaster"
    text, status, original = parts(msg)
    assert status_blocks(status)[0]["X-Postpy-Sender"] == "rfc822;"
    assert "null sender" in text.get_content()  # type: ignore[attr-defined]
    assert original.get_content_type() == "message/rfc822"


def test_eight_bit_content_and_reason() -> None:
    content = "From: a@example.org\nSubject: caf\u00e9\n\nna\u00efve\n".encode()
    rcpts = [dsn.ReportedRecipient("bob@example.net", "failed", "5.0.0", "r\u00e9ponse n\u00e9gative")]
    data = dsn.compose(report(content=content, recipients=rcpts))
    assert b"\nContent-Transfer-Encoding: 8bit\n" in data
    msg = parse(data)
    text, _, original = parts(msg)
    assert text.get_content_charset() == "utf-8"
    assert "r\u00e9ponse n\u00e9gative" in text.get_content()  # type: ignore[attr-defined]
    assert original["Content-Transfer-Encoding"] == "8bit"
    assert content in data


def test_non_ascii_recipient_uses_rfc6533() -> None:
    rcpts = [dsn.ReportedRecipient("j\u00f6rg@example.de", "failed", "5.1.1", "unknown user")]
    msg = parse(dsn.compose(report(recipients=rcpts)))
    _, status, _ = parts(msg)
    assert status.get_content_type() == "message/global-delivery-status"


def test_boundary_never_inside_the_returned_message() -> None:
    rep = report()
    taken = dsn.boundary_for(rep)
    content = CONTENT + f"--{taken}\n".encode()
    rep = report(content=content)
    data = dsn.compose(rep)
    msg = parse(data)
    _, _, original = parts(msg)
    assert msg.get_boundary() != taken
    assert str(inner_message(original).get_payload()).endswith(f"--{taken}\n")


def test_hostile_text_cannot_add_headers_or_fields() -> None:
    rcpts = [dsn.ReportedRecipient("bob@example.net", "failed", "5.1.1",
                                   "bad\nAction: delivered\n\nFinal-Recipient: rfc822; evil@example")]
    msg = parse(dsn.compose(report(recipients=rcpts, to="alice@example.org\nBcc: evil@example")))
    assert msg["Bcc"] is None
    _, status, _ = parts(msg)
    blocks = status_blocks(status)
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (3599, "59 minutes"),
    (3600, "1 hour"), (7200, "2 hours"), (86400, "1 day"), (5 * 86400 + 10, "5 days"), (-5, "0 seconds"),
])
def test_describe_age(seconds: float, text: str) -> None:
    assert texts.describe_age(seconds) == text


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        texts.human_text("nonsense", host="h", mail_name="postpy", whole_message=True)
