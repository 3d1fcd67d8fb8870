"""Header block parsing (postpy.mail.headers) and cleanup's header rewriting."""

from __future__ import annotations

import re

import pytest

from postpy.cleanup.envelope import Refusal, check_envelope
from postpy.cleanup.headers import (
    HeaderSettings,
    process_headers,
    qualify_header,
    received_header,
)
from postpy.ipc.messages import CleanupEnvelope, Rcpt
from postpy.mail.headers import Header, HeaderBlockReader, header_name, rfc5322_date, unfold

SETTINGS = HeaderSettings(myhostname="mx.test.example", myorigin="test.example",
                          mail_name="postpy", hopcount_limit=5)
NOW = 1756116672.0     # 2025-08-25 10:11:12 UTC


def read(content: bytes, chunk: int = 0, size_limit: int = 1000, count_limit: int = 50
         ) -> HeaderBlockReader:
    reader = HeaderBlockReader(size_limit, count_limit)
    pieces = [content[i:i + chunk] for i in range(0, len(content), chunk)] if chunk else [content]
    rest = b""
    for i, piece in enumerate(pieces):
        if reader.feed(piece):
            rest = b"".join(pieces[i + 1:])
            break
    else:
        reader.close()
    reader.body_start += rest
    return reader


# -- the reader: a table of good and malformed header blocks ---------------------

BLOCKS = [
    # content, header names, separator, body
    (b"Subject: hi\nTo: a@b\n\nbody\n", ["Subject", "To"], True, b"body\n"),
    (b"Subject: hi\r\n\r\nbody\r\n", ["Subject"], True, b"body\r\n"),
    (b"Subject: a\n b\n\tc\nTo: x\n\nB", ["Subject", "To"], True, b"B"),
    (b"X-Weird : spaced colon\n\n", ["X-Weird"], True, b""),
    (b"no colon here\nSubject: x\n\n", [], False, b"no colon here\nSubject: x\n\n"),
    (b"Subject: x\nthis is body\nmore\n", ["Subject"], False, b"this is body\nmore\n"),
    (b" leading space\nSubject: x\n", [], False, b" leading space\nSubject: x\n"),
    (b"Subj\xe9ct: 8-bit name\n\n", [], False, b"Subj\xe9ct: 8-bit name\n\n"),
    (b"Subject: 8-bit \xe9 value\n\nx\n", ["Subject"], True, b"x\n"),
    (b"Bad Name: space in name\n", [], False, b"Bad Name: space in name\n"),
    (b":empty name\n", [], False, b":empty name\n"),
    (b"Subject: no final newline", ["Subject"], False, b""),
    (b"Subject: x\n", ["Subject"], False, b""),
    (b"", [], False, b""),
    (b"\nbody only\n", [], True, b"body only\n"),
    (b"From user Mon Jan  1 00:00:00 2024\nSubject: x\n\n", [], False,
     b"From user Mon Jan  1 00:00:00 2024\nSubject: x\n\n"),
]


@pytest.mark.parametrize("chunk", [0, 1, 3, 7])
@pytest.mark.parametrize(("content", "names", "separator", "body"), BLOCKS)
def test_header_block_reader(content, names, separator, body, chunk):
    reader = read(content, chunk)
    assert [h.name for h in reader.headers] == names
    assert reader.separator is separator
    assert reader.body_start == body
    for h in reader.headers:
        assert h.raw.endswith(b"\n")


def test_folded_header_kept_byte_for_byte_and_unfolded():
    reader = read(b"Subject: one\n two\n\tthree\n\n")
    (h,) = reader.headers
    assert h.raw == b"Subject: one\n two\n\tthree\n"
    assert h.unfolded() == "one two\tthree"
    assert unfold(b" a\r\n b\n c\n") == b" a b c"


def test_header_name_rules():
    assert header_name(b"Subject: x") == "Subject"
    assert header_name(b"X-A_b.c: x") == "X-A_b.c"
    assert header_name(b"No colon") is None
    assert header_name(b"\xff: x") is None


def test_oversized_header_is_truncated_at_a_line_boundary():
    big = b"X-Big: start\n" + b"".join(b"\t" + b"y" * 60 + b"\n" for _ in range(100))
    reader = read(big + b"Subject: after\n\nbody\n", chunk=50, size_limit=500)
    assert [h.name for h in reader.headers] == ["X-Big", "Subject"]
    assert reader.headers[0].truncated and len(reader.headers[0].raw) <= 500
    assert reader.headers[0].raw.endswith(b"\n")
    assert reader.truncated == ["X-Big"]
    assert reader.body_start == b"body\n"


def test_huge_single_line_header_is_cut_and_the_rest_discarded():
    content = b"X-Long: " + b"z" * 100_000 + b"\nSubject: s\n\nbody\n"
    reader = read(content, chunk=4096, size_limit=1000)
    assert [h.name for h in reader.headers] == ["X-Long", "Subject"]
    assert len(reader.headers[0].raw) == 1001
    assert reader.body_start == b"body\n"


def test_huge_line_without_colon_becomes_body_without_buffering_it_all():
    content = b"Subject: s\n" + b"q" * 50_000
    reader = HeaderBlockReader(1000, 10)
    assert reader.feed(content[:2000]) is True
    assert reader.separator is False
    assert reader.body_start == b"q" * (2000 - len(b"Subject: s\n"))


def test_headers_beyond_count_limit_become_body():
    content = b"".join(b"X-H%d: v\n" % i for i in range(10)) + b"\nbody\n"
    reader = read(content, count_limit=4)
    assert len(reader.headers) == 4
    assert reader.separator is False
    assert reader.body_start.startswith(b"X-H4: v\n")


def test_rfc5322_date_shape():
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} "
                        r"\d\d:\d\d:\d\d [+-]\d{4}( \([A-Za-z]+\))?", rfc5322_date(NOW))


# -- cleanup's processing ------------------------------------------------------------

def envelope(sender="alice@test.example", rcpts=("bob@example.net",), **attrs):
    msg = CleanupEnvelope(sender, [Rcpt(r) for r in rcpts], dict(attrs))
    return check_envelope(msg, SETTINGS.myorigin)


def process(content: bytes, env, queue_id="QID"):
    return process_headers(read(content), env, queue_id, SETTINGS, NOW)


def test_received_for_smtp_client_with_one_recipient():
    env = envelope(origin="smtpd", client_name="client.example", client_addr="192.0.2.5",
                   helo="helo.example", protocol="ESMTP")
    text = received_header(env, "4Xk2", SETTINGS, NOW)
    assert re.fullmatch(
        r"Received: from helo\.example \(client\.example \[192\.0\.2\.5\]\)\n"
        r"\tby mx\.test\.example \(postpy\) with ESMTP id 4Xk2\n"
        r"\tfor <bob@example\.net>; \w{3}, .+\n", text), text


def test_received_with_tls_and_several_recipients():
    env = envelope(rcpts=("a@x", "b@x"), origin="smtpd", client_addr="192.0.2.5",
                   protocol="ESMTPS", tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
    lines = received_header(env, "ID1", SETTINGS, NOW).splitlines()
    assert lines[0] == "Received: from unknown (unknown [192.0.2.5])"
    assert lines[1] == "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))"
    assert lines[2] == "\tby mx.test.example (postpy) with ESMTPS id ID1;"
    assert lines[3].startswith("\t") and "for" not in lines[3]


def test_received_for_local_submission():
    env = envelope(rcpts=("a@x", "b@x"), origin="pickup", uid="1000")
    lines = received_header(env, "ID2", SETTINGS, NOW).splitlines()
    assert lines[0] == "Received: by mx.test.example (postpy, from userid 1000)"
    assert lines[1] == "\tid ID2;"
    env = envelope(origin="bounce")
    assert received_header(env, "ID3", SETTINGS, NOW).startswith(
        "Received: by mx.test.example (postpy)\n\tid ID3\n\tfor <bob@example.net>; ")


def test_missing_headers_added_for_pickup_in_postfix_order():
    env = envelope(sender="alice", origin="pickup", uid="1000", full_name="Alice Liddell")
    result = process(b"Subject: hi\n", env, "QID9")
    lines = result.data.decode().splitlines()
    assert lines[0].startswith("Received: by mx.test.example")
    assert "Subject: hi" in lines
    tail = lines[-3:]
    assert re.fullmatch(r"Message-ID: <\d{14}\.QID9@mx\.test\.example>", tail[0])
    assert tail[1].startswith("Date: ")
    assert tail[2] == "From: Alice Liddell <alice@test.example>"
    assert result.message_id == tail[0].split(" ", 1)[1]


@pytest.mark.parametrize(("full_name", "expected"), [
    ("", "From: alice@test.example"),
    ("Doe, John", 'From: "Doe, John" <alice@test.example>'),
    ('Say "hi"', 'From: "Say \\"hi\\"" <alice@test.example>'),
    ("Jürgen", "From: =?utf-8?q?J=C3=BCrgen?= <alice@test.example>"),
])
def test_from_display_name_is_quoted(full_name, expected):
    attrs = {"origin": "pickup"}
    if full_name:
        attrs["full_name"] = full_name
    result = process(b"Subject: x\n\n", envelope(**attrs))
    assert expected in result.data.decode().splitlines()


def test_existing_headers_are_not_duplicated_and_message_id_is_logged():
    content = b"From: a@b\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-Id: <x@y>\n\n"
    result = process(content, envelope(origin="pickup"))
    text = result.data.decode()
    assert text.count("From:") == 1 and text.count("Date:") == 1
    assert text.lower().count("message-id:") == 1
    assert result.message_id == "<x@y>"


def test_remote_mail_gets_no_missing_headers():
    result = process(b"Subject: x\n", envelope(origin="smtpd", client_addr="192.0.2.1"))
    assert "Message-ID" not in result.data.decode()
    assert result.message_id == ""


def test_null_sender_from_header():
    result = process(b"Subject: x\n", envelope(sender="", origin="pickup"))
    assert "From: MAILER-DAEMON@mx.test.example" in result.data.decode().splitlines()


def test_hopcount_limit():
    ok = b"Received: a\nDelivered-To: b\nReceived: c\nReceived: d\n\n"
    process(ok, envelope())
    with pytest.raises(Refusal) as info:
        process(b"Received: x\n" + ok, envelope())
    assert info.value.status == "perm"
    assert info.value.reply == "5.4.6 Too many hops"


def test_extract_adds_recipients_and_removes_bcc():
    content = (b"To: Bob <bob@example.net>, carol@example.org\n"
               b"Cc: \"Dave, D.\" <dave@example.com>, bob@example.net\n"
               b"Bcc: secret@example.org,\n hidden\n"
               b"Subject: t\n\nbody\n")
    env = envelope(rcpts=("arg@example.net",), origin="pickup", extract="yes")
    result = process(content, env)
    assert [r.address for r in env.recipients] == [
        "arg@example.net", "bob@example.net", "carol@example.org", "dave@example.com",
        "secret@example.org", "hidden@test.example"]
    assert [r.orig for r in env.recipients][-1] == "hidden"
    text = result.data.decode()
    assert "Bcc" not in text and "secret" not in text and "hidden" not in text
    assert "To: Bob <bob@example.net>" in text


def test_extract_uses_resent_headers_when_present():
    content = (b"To: old@example.net\nBcc: oldbcc@example.net\n"
               b"Resent-To: new@example.net\nResent-Bcc: newbcc@example.net\n\n")
    env = envelope(rcpts=(), origin="pickup", extract="yes")
    result = process(content, env)
    assert [r.address for r in env.recipients] == ["new@example.net", "newbcc@example.net"]
    assert b"Bcc" not in result.data


@pytest.mark.parametrize("content", [
    b"Subject: no recipients\n\n",
    b"To: undisclosed-recipients:;\n\n",
    b"To:\n\n",
])
def test_extract_without_recipients_is_refused(content):
    env = envelope(rcpts=(), origin="pickup", extract="yes")
    with pytest.raises(Refusal) as info:
        process(content, env)
    assert info.value.reply == "5.1.3 No recipient addresses found in message header"


@pytest.mark.parametrize(("raw", "expected"), [
    (b"To: root\n", b"To: root@test.example\n"),
    (b"To: root, bob@x.example\n", b"To: root@test.example, bob@x.example\n"),
    (b"To: Root User <root>\n", b"To: Root User <root@test.example>\n"),
    (b"From: root (Cron Daemon)\n", b"From: root@test.example (Cron Daemon)\n"),
    (b"Cc: bench2 (second), \"Ann\" <bench2>\n",
     b"Cc: bench2@test.example (second), \"Ann\" <bench2@test.example>\n"),
    (b'To: "quoted" <root>\n', b'To: "quoted" <root@test.example>\n'),
    (b'To: "odd name"\n', b'To: "odd name"@test.example\n'),
    (b"To: group: a, b@x.example;\n", b"To: group: a@test.example, b@x.example;\n"),
    (b"To: a,\n\tb (folded)\n", b"To: a@test.example,\n\tb@test.example (folded)\n"),
    (b"To : root\n", b"To : root@test.example\n"),                     # obsolete space
    (b"To: =?utf-8?q?J=C3=B6rg?= <jorg>\n", b"To: =?utf-8?q?J=C3=B6rg?= <jorg@test.example>\n"),
    (b"To: a@[127.0.0.2], root\n", b"To: a@[127.0.0.2], root@test.example\n"),
    (b"To: bob@x.example\n", None),                                     # nothing to do
    (b"To: undisclosed-recipients:;\n", None),
    (b"To: not an (address\n", None),                                   # left as written
    (b"To: a@b c@d\n", None),
])
def test_qualify_header(raw, expected):
    header = Header(raw.split(b":")[0].strip().decode(), raw)
    assert qualify_header(header, "test.example").raw == (expected or raw)


def test_local_mail_gets_header_addresses_qualified():
    result = process(b"From: alice\nTo: bob, carol@x.example\n\n", envelope(origin="pickup"))
    lines = result.data.decode().splitlines()
    assert "From: alice@test.example" in lines
    assert "To: bob@test.example, carol@x.example" in lines


QUALIFIED_BLOCK = (b"From: root (Cron Daemon)\nSender: root\nReply-To: root\n"
                   b"Cc: bench2 (second), \"Ann\" <bench2>\nBcc: hidden\n"
                   b"Resent-From: root\nResent-To: x\nReturn-Receipt-To: root\n"
                   b"Subject: root\nX-Other: root\n\n")


def test_local_mail_gets_every_address_header_qualified():
    result = process(QUALIFIED_BLOCK, envelope(origin="pickup"))
    lines = result.data.decode().splitlines()
    for line in ("From: root@test.example (Cron Daemon)", "Sender: root@test.example",
                 "Reply-To: root@test.example",
                 'Cc: bench2@test.example (second), "Ann" <bench2@test.example>',
                 "Bcc: hidden@test.example", "Resent-From: root@test.example",
                 "Resent-To: x@test.example", "Return-Receipt-To: root@test.example",
                 "Subject: root", "X-Other: root"):
        assert line in lines


def test_remote_mail_headers_are_not_qualified():
    result = process(QUALIFIED_BLOCK, envelope(origin="smtpd"))
    assert b"From: root (Cron Daemon)\n" in result.data
    assert b"Reply-To: root\n" in result.data


def test_remote_client_with_rewrite_gets_headers_qualified():
    # smtpd sets rewrite=yes for clients in local_header_rewrite_clients.
    result = process(QUALIFIED_BLOCK, envelope(origin="smtpd", rewrite="yes"))
    assert b"From: root@test.example (Cron Daemon)\n" in result.data


def test_append_at_myorigin_off_leaves_headers_alone():
    settings = HeaderSettings(myhostname="mx.test.example", myorigin="", mail_name="postpy")
    env = envelope(origin="pickup")
    result = process_headers(read(QUALIFIED_BLOCK), env, "4XyZ", settings, NOW)
    assert b"From: root (Cron Daemon)\n" in result.data


@pytest.mark.parametrize(("content", "expected"), [
    (b"To: bench3, b@[127.0.0.2]\n\n", ["bench3@test.example", "b@[127.0.0.2]"]),
    (b"To: Ann <a@[IPv6:2001:db8::1]> (c)\n\n", ["a@[IPv6:2001:db8::1]"]),
    (b"To: <@relay.example:x@example.org>\n\n", ["x@example.org"]),
    (b'To: "odd name"@x.example, (comment) c@y.example\n\n', ['"odd name"@x.example', "c@y.example"]),
    (b"To: team: a@x.example, b@x.example;\n\n", ["a@x.example", "b@x.example"]),
])
def test_extract_keeps_every_recipient(content, expected):
    env = envelope(rcpts=(), origin="pickup", extract="yes")
    process(content, env)
    assert [r.address for r in env.recipients] == expected


@pytest.mark.parametrize("content", [
    b"To: a@x.example, b@[999.0.0.1]\n\n",
    b"To: a@x.example b@y.example\n\n",
    b"Cc: (unterminated\nTo: a@x.example\n\n",
])
def test_extract_refuses_an_unparsable_recipient_header(content):
    env = envelope(rcpts=(), origin="pickup", extract="yes")
    with pytest.raises(Refusal) as info:
        process(content, env)
    assert info.value.reply.startswith("5.1.3 Bad recipient address syntax in header ")


@pytest.mark.parametrize(("sender", "rcpt", "reply"), [
    ("a\nb", "x@y", "5.1.7 Bad sender address syntax"),
    ("a@b", "x@y\r\nBcc: z", "5.1.3 Bad recipient address syntax"),
    ("a@b", "", "5.1.3 Bad recipient address syntax"),
])
def test_envelope_with_control_characters_is_refused(sender, rcpt, reply):
    with pytest.raises(Refusal) as info:
        check_envelope(CleanupEnvelope(sender, [Rcpt(rcpt)], {}), "test.example")
    assert info.value.reply == reply


def test_unknown_attribute_is_a_temporary_protocol_error():
    with pytest.raises(Refusal) as info:
        check_envelope(CleanupEnvelope("a@b", [Rcpt("c@d")], {"bogus": "1"}), "x")
    assert info.value.status == "temp"


def test_header_injection_through_attribute_is_refused():
    with pytest.raises(Refusal):
        check_envelope(CleanupEnvelope("a@b", [Rcpt("c@d")], {"full_name": "x\nBcc: y"}), "x")


def test_envelope_myorigin_and_duplicates():
    env = check_envelope(CleanupEnvelope("alice", [Rcpt("root"), Rcpt("root"), Rcpt("b@x")], {}),
                         "test.example")
    assert env.sender == "alice@test.example"
    assert [(r.address, r.orig) for r in env.recipients] == [
        ("root@test.example", "root"), ("b@x", "")]
    assert check_envelope(CleanupEnvelope("", [Rcpt("b@x")], {}), "t").sender == ""
