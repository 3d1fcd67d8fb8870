"""cleanup's header and body checks: checks.py, mime_scan.py, disposition.py, and
their use by the cleanup conversation (session.py) over real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.cleanup.checks import CheckSettings, ContentChecks, ContentRefusal, reject_reply
from postpy.cleanup.envelope import CheckedEnvelope, Refusal
from postpy.cleanup.headers import HeaderSettings
from postpy.cleanup.mime_scan import BODY, HEADER, MULTIPART, NESTED, RAW, MimeScanner
from postpy.cleanup.session import CleanupSettings, Session
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, CleanupHello, CleanupResult, Rcpt
from postpy.mail.headers import HeaderBlockReader
from postpy.queue import qfile
from postpy.tables import maps
from postpy.util import maillog

SMTP_ATTRS = {"origin": "smtpd", "client_addr": "127.0.0.1", "client_name": "localhost",
              "helo": "client.example", "protocol": "ESMTP"}


@pytest.fixture(autouse=True)
def log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "maillog"
    maillog.setup("cleanup", maillog_file=str(path), hostname="mx")
    maps.clear_cache()
    yield path
    maps.clear_cache()


def rules(tmp_path: Path, text: str, name: str = "checks") -> tuple[str, ...]:
    path = tmp_path / name
    path.write_text(text)
    return (f"regexp:{path}",)


def envelope(**attrs: str) -> CheckedEnvelope:
    recipients = [qfile.Recipient("bob@test.example"), qfile.Recipient("carol@test.example")]
    return CheckedEnvelope("alice@example.org", recipients, {**SMTP_ATTRS, **attrs},
                           {"content_filter": "old:filter"})


def split(message: bytes) -> tuple[list, bytes]:
    reader = HeaderBlockReader()
    assert reader.feed(message)
    return reader.headers, reader.body_start


def run_checks(settings: CheckSettings, message: bytes, chunk: int = 7
               ) -> tuple[ContentChecks, bytes]:
    """Headers and body through the checks; the stored message."""
    checks = settings.for_message(envelope(), "QID")
    assert checks is not None
    headers, body = split(message)
    out = b"".join(h.raw for h in checks.check_headers(headers)) + b"\n"
    for i in range(0, len(body), chunk):
        out += checks.body(body[i:i + chunk])
    return checks, out + checks.end()


# -- actions on a primary header -------------------------------------------------------

CONTEXT = "from localhost[127.0.0.1]; from=<alice@example.org> to=<bob@test.example> " \
          "proto=ESMTP helo=<client.example>"
MESSAGE = b"Subject: buy now\nFrom: a@example.org\n\nbody\n"

ACTIONS = [
    # action, stored message (None: refused), log line after "QID: "
    ("WARN look", MESSAGE, f"warning: header Subject: buy now {CONTEXT}: look"),
    ("warn", MESSAGE, f"warning: header Subject: buy now {CONTEXT}"),
    ("INFO fyi", MESSAGE, f"info: header Subject: buy now {CONTEXT}: fyi"),
    ("IGNORE", b"From: a@example.org\n\nbody\n", None),
    ("STRIP gone", b"From: a@example.org\n\nbody\n", f"strip: header Subject: buy now {CONTEXT}: gone"),
    ("PREPEND X-Spam: yes", b"X-Spam: yes\n" + MESSAGE,
     f"prepend: header Subject: buy now {CONTEXT}: X-Spam: yes"),
    ("REPLACE Subject: [spam] buy now", b"Subject: [spam] buy now\nFrom: a@example.org\n\nbody\n",
     f"replace: header Subject: buy now {CONTEXT}: Subject: [spam] buy now"),
    ("PREPEND not a header", MESSAGE, None),            # warned, ignored
    ("REPLACE", MESSAGE, None),
    ("DUNNO", MESSAGE, None),
    ("OK", MESSAGE, None),
    ("FROBNICATE x", MESSAGE, None),
    ("HOLD later", MESSAGE, f"hold: header Subject: buy now {CONTEXT}: later"),
    ("DISCARD bye", b"Subject: buy now\nFrom: a@example.org\n\n", f"discard: header Subject: buy now {CONTEXT}: bye"),
    ("REDIRECT spam@example.net", MESSAGE,
     f"redirect: header Subject: buy now {CONTEXT}: spam@example.net"),
    ("FILTER smtp:[127.0.0.1]:10025", MESSAGE,
     f"filter: header Subject: buy now {CONTEXT}: smtp:[127.0.0.1]:10025"),
    ("PASS trusted", MESSAGE, f"pass: header Subject: buy now {CONTEXT}: trusted"),
]


@pytest.mark.parametrize(("action", "stored", "logged"), ACTIONS)
def test_header_action(tmp_path: Path, log: Path, action: str, stored: bytes, logged: str | None) -> None:
    settings = CheckSettings(header_checks=rules(tmp_path, f"/^Subject: buy/ {action}\n"))
    checks, out = run_checks(settings, MESSAGE)
    assert out == stored
    text = log.read_text() if log.exists() else ""
    if logged is not None:
        assert f"QID: {logged}\n" in text
    verb = action.split()[0]
    assert checks.hold == (verb == "HOLD") and checks.discard == (verb == "DISCARD")
    assert checks.stopped == (verb in ("DISCARD", "PASS"))
    if verb in ("PREPEND", "REPLACE") and stored == MESSAGE or verb == "FROBNICATE":
        assert "warning:" in text


def test_reject_raises_with_postfix_log_line(tmp_path: Path, log: Path) -> None:
    settings = CheckSettings(header_checks=rules(tmp_path, "/^Subject: buy/ REJECT no spam\n"))
    with pytest.raises(ContentRefusal) as info:
        run_checks(settings, MESSAGE)
    assert (info.value.status, info.value.reply) == ("perm", "5.7.1 no spam")
    assert f"QID: reject: header Subject: buy now {CONTEXT}: 5.7.1 no spam\n" in log.read_text()


@pytest.mark.parametrize(("text", "reply"), [
    ("", "5.7.1 Message content rejected"),
    ("go away", "5.7.1 go away"),
    ("5.7.0 policy", "5.7.0 policy"),
    ("4.7.1 try later", "4.7.1 try later"),
    ("5.7.1234 not a code", "5.7.1 5.7.1234 not a code"),
])
def test_reject_reply(text: str, reply: str) -> None:
    assert reject_reply(text) == reply


def test_redirect_filter_and_bcc_reach_the_envelope(tmp_path: Path) -> None:
    settings = CheckSettings(header_checks=rules(tmp_path, "/^From:/ FILTER smtp:[::1]:10025\n"
                                                "/^To:/ BCC archive@example.net\n/^Subject:/ REDIRECT\n"))
    checks, _ = run_checks(settings, b"From: x\nTo: y\nSubject: z\n\n")
    env = envelope()
    checks.apply_to(env)
    assert env.stored["content_filter"] == "smtp:[::1]:10025"
    assert [(r.address, r.notify) for r in env.recipients][-1] == ("archive@example.net", "NEVER")
    settings = CheckSettings(header_checks=rules(tmp_path, "/^From:/ FILTER smtp:x\n"
                                                "/^Subject:/ REDIRECT spam@example.net\n", "c2"))
    checks, _ = run_checks(settings, b"From: x\nSubject: z\n\n")
    env = envelope()
    checks.apply_to(env)
    assert [r.address for r in env.recipients] == ["spam@example.net"]
    assert "content_filter" not in env.stored                # REDIRECT overrides FILTER


def test_folded_header_is_one_line(tmp_path: Path) -> None:
    """The lines joined with their line breaks: "." and [[:space:]] match one in regexp:,
    "$" is the end of the whole header."""
    settings = CheckSettings(header_checks=rules(tmp_path, "/^Subject: first$/ WARN\n"
                                                 "/^Subject: first[[:space:]]+second$/ IGNORE\n"))
    _, out = run_checks(settings, b"Subject: first\n\tsecond\nX: y\n\nb\n")
    assert out == b"X: y\n\nb\n"
    settings = CheckSettings(header_checks=rules(tmp_path, "/^Subject: first\\n\tsecond$/ IGNORE\n", "p"))
    settings = CheckSettings(header_checks=(settings.header_checks[0].replace("regexp:", "pcre:"),))
    _, out = run_checks(settings, b"Subject: first\n\tsecond\nX: y\n\nb\n")
    assert out == b"X: y\n\nb\n"


def test_empty_lines_never_match_and_inspection_stops(tmp_path: Path) -> None:
    settings = CheckSettings(body_checks=rules(tmp_path, "/^$/ REJECT empty\n/x/ DISCARD\n/y/ REJECT\n"))
    checks, out = run_checks(settings, b"S: s\n\n\nx\ny\n")
    assert checks.discard and out == b"S: s\n\n\n"


# -- MIME: which table sees which line -------------------------------------------------

MIME = b"""\
From: a@example.org
Subject: parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain
X-Part: one

hello in part one
--outer
Content-Type: message/rfc822

Subject: attached
From: b@example.org
Content-Type: multipart/alternative;
\tboundary=inner

--inner
Content-Type: text/html

<p>inner html</p>
--inner--
inner epilogue
--outer--
epilogue
"""


def test_mime_tables(tmp_path: Path, log: Path) -> None:
    settings = CheckSettings(
        header_checks=rules(tmp_path, "/./ WARN primary\n", "h"),
        mime_header_checks=rules(tmp_path, "/./ WARN mime\n", "m"),
        nested_header_checks=rules(tmp_path, "/./ WARN nested\n", "n"),
        body_checks=rules(tmp_path, "/./ WARN body\n", "b"))
    _, out = run_checks(settings, MIME, chunk=5)
    assert out == MIME
    seen = {}
    for line in log.read_text().splitlines():
        what, _, rest = line.partition("QID: warning: ")[2].partition(" ")
        seen[rest.partition(" from localhost")[0]] = f"{what} {line.rsplit(': ', 1)[1]}"
    assert seen == {
        "From: a@example.org": "header primary", "Subject: parts": "header primary",
        "MIME-Version: 1.0": "header mime",
        'Content-Type: multipart/mixed; boundary="outer"': "header mime",
        "preamble": "body body", "--outer": "body body", "Content-Type: text/plain": "header mime",
        "X-Part: one": "header mime", "hello in part one": "body body",
        "Content-Type: message/rfc822": "header mime", "Subject: attached": "header nested",
        "From: b@example.org": "header nested",
        "Content-Type: multipart/alternative; ?boundary=inner": "header mime",    # the log shows a tab as ?
        "--inner": "body body", "Content-Type: text/html": "header mime",
        "<p>inner html</p>": "body body", "--inner--": "body body", "inner epilogue": "body body",
        "--outer--": "body body", "epilogue": "body body",
    }


def test_mime_header_edits_inside_parts(tmp_path: Path) -> None:
    settings = CheckSettings(mime_header_checks=rules(tmp_path, "/^X-Part:/ IGNORE\n"
                                                      "/^Content-Type: text\\/html/ REPLACE Content-Type: text/plain\n"),
                             nested_header_checks=rules(tmp_path, "/^Subject: attached/ PREPEND X-Seen: 1\n", "n"))
    _, out = run_checks(settings, MIME)
    assert out == MIME.replace(b"X-Part: one\n", b"").replace(b"text/html", b"text/plain").replace(
        b"Subject: attached\n", b"X-Seen: 1\nSubject: attached\n")


def test_body_checks_size_limit_per_segment(tmp_path: Path, log: Path) -> None:
    settings = CheckSettings(body_checks=rules(tmp_path, "/^bad/ WARN\n"), body_checks_size_limit=20)
    message = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nbad 1\n" + b"x" * 30 + b"\nbad 2\n"
               b"--b\n\nbad 3\n--b--\n")
    run_checks(settings, message)
    text = log.read_text()
    assert "body bad 1 " in text and "body bad 3 " in text and "body bad 2 " not in text


def test_long_body_lines_are_checked_in_pieces(tmp_path: Path, log: Path) -> None:
    settings = CheckSettings(body_checks=rules(tmp_path, "/^y+$/ WARN long\n"), line_length_limit=100)
    _, out = run_checks(settings, b"S: s\n\n" + b"y" * 250 + b"\n")
    assert out == b"S: s\n\n" + b"y" * 250 + b"\n"
    assert log.read_text().count(": long") == 3


def pieces_of(primary: bytes, body: bytes, chunk: int, **kw: object) -> list:
    headers, _ = split(primary + b"\n")
    scanner = MimeScanner(headers, **kw)  # type: ignore[arg-type]
    out = []
    for i in range(0, len(body), chunk):
        out += scanner.feed(body[i:i + chunk])
    return out + scanner.close()


@pytest.mark.parametrize("chunk", [1, 3, 64, 100000])
def test_scanner_pieces_rejoin_to_the_body(chunk: int) -> None:
    primary, body = MIME.split(b"\n\n", 1)
    for kw in ({}, {"body_lines": False}, {"line_limit": 5, "header_limit": 10}):
        pieces = pieces_of(primary + b"\n", body, chunk, **kw)
        assert b"".join(p.data for p in pieces) == body, kw


def test_scanner_classes() -> None:
    primary, body = MIME.split(b"\n\n", 1)
    pieces = pieces_of(primary + b"\n", body, 10)
    headers = [(p.header_class, p.data) for p in pieces if p.kind == HEADER]
    assert (NESTED, b"Subject: attached\n") in headers
    assert (MULTIPART, b"X-Part: one\n") in headers
    assert (NESTED, b"Content-Type: multipart/alternative;\n\tboundary=inner\n") in headers
    assert {p.kind for p in pieces} == {HEADER, BODY}


def test_scanner_digest_and_raw() -> None:
    digest = (b"--d\n\nSubject: in digest\n\nbody\n--d\nContent-Type: text/plain\n\nSubject: text\n--d--\n")
    pieces = pieces_of(b"Content-Type: multipart/digest; boundary=d\n", digest, 4)
    assert [p.data for p in pieces if p.kind == HEADER] == [b"Subject: in digest\n",
                                                             b"Content-Type: text/plain\n"]
    plain = pieces_of(b"Subject: x\n", b"no mime here\n" * 3, 5, body_lines=False)
    assert {p.kind for p in plain} == {RAW}


# -- when checks apply, and tables that fail --------------------------------------------

def test_not_inspected(tmp_path: Path) -> None:
    settings = CheckSettings(header_checks=rules(tmp_path, "/./ REJECT\n"))
    assert settings.for_message(envelope(), "Q") is not None
    assert settings.for_message(envelope(overrides="no_header_body_checks"), "Q") is None
    assert settings.for_message(envelope(origin="bounce"), "Q") is None
    assert settings.for_message(envelope(origin="local"), "Q") is None
    assert CheckSettings().for_message(envelope(), "Q") is None


def test_default_parameters_from_config(tmp_path: Path) -> None:
    from postpy.config.maincf import load_config
    (tmp_path / "main.cf").write_text("header_checks = regexp:/etc/h, pcre:/etc/p\n")
    settings = CheckSettings.from_config(load_config(str(tmp_path)))
    assert settings.mime_header_checks == settings.nested_header_checks == (
        "regexp:/etc/h", "pcre:/etc/p")
    assert (settings.body_checks, settings.body_checks_size_limit) == ((), 51200)


@pytest.mark.parametrize("text", ["/a/ REJECT\n/b/Z x\n", "if /a/\n"])
def test_malformed_table_defers_the_message(tmp_path: Path, log: Path, text: str) -> None:
    settings = CheckSettings(header_checks=rules(tmp_path, text))
    with pytest.raises(Refusal) as info:
        run_checks(settings, MESSAGE)
    assert not isinstance(info.value, ContentRefusal)
    assert (info.value.status, info.value.reply) == ("temp", "4.3.5 Server configuration error")
    assert f"QID: header_checks map regexp:{tmp_path}/checks: regexp map {tmp_path}/checks, line " \
           in log.read_text()


# -- through the cleanup conversation ------------------------------------------------------

class Queue:
    def __init__(self, base: Path) -> None:
        self.incoming, self.hold = base / "incoming", base / "hold"
        self.incoming.mkdir()
        self.hold.mkdir()
        self.base = base

    def settings(self, **checks: object) -> CleanupSettings:
        return CleanupSettings(headers=HeaderSettings(myhostname="mx.test.example", myorigin="test.example"),
                               incoming=str(self.incoming), qmgr_trigger=str(self.base / "no-qmgr"),
                               timeout=10.0, checks=CheckSettings(**checks))  # type: ignore[arg-type]


def converse(settings: CleanupSettings, env: CleanupEnvelope, content: bytes) -> CleanupResult:
    client, server = socket.socketpair()
    client.settimeout(10)
    thread = threading.Thread(target=lambda: Session(server, settings).run())
    thread.start()
    try:
        codec.expect(codec.recv(client), CleanupHello)
        codec.send(client, env)
        for i in range(0, len(content), 50):
            client.sendall(codec.encode_data(content[i:i + 50]))
        client.sendall(codec.encode_end())
        result = codec.expect(codec.recv(client), CleanupResult)
    finally:
        thread.join(10)
        assert not thread.is_alive()
        client.close()
        server.close()
    return result


def smtp_env(**attrs: str) -> CleanupEnvelope:
    return CleanupEnvelope("alice@example.org", [Rcpt("bob@test.example")], {**SMTP_ATTRS, **attrs})


BODY_MESSAGE = b"Subject: hi\n\n" + b"filler line\n" * 500 + b"trigger here\nlast\n"


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path)


def test_session_reject_in_body(queue: Queue, tmp_path: Path, log: Path) -> None:
    settings = queue.settings(body_checks=rules(tmp_path, "/^trigger/ REJECT 5.7.0 not here\n"))
    result = converse(settings, smtp_env(), BODY_MESSAGE)
    assert (result.status, result.reply) == ("perm", "5.7.0 not here")
    assert list(queue.incoming.iterdir()) == [] and list(queue.hold.iterdir()) == []
    rejects = [line for line in log.read_text().splitlines() if ": reject: " in line]
    assert len(rejects) == 1 and rejects[0].endswith(
        "reject: body trigger here from localhost[127.0.0.1]; from=<alice@example.org> "
        "to=<bob@test.example> proto=ESMTP helo=<client.example>: 5.7.0 not here")


def test_session_reject_from_pickup_is_returned(queue: Queue, tmp_path: Path) -> None:
    settings = queue.settings(header_checks=rules(tmp_path, "/^Subject: hi/ REJECT\n"))
    env = CleanupEnvelope("alice@test.example", [Rcpt("bob@test.example")], {"origin": "pickup", "uid": "0"})
    result = converse(settings, env, BODY_MESSAGE)
    assert result.status == "ok" and "returned: 5.7.1 Message content rejected" in result.reply
    stored = qfile.read_envelope(str(queue.incoming / result.queue_id))
    assert [r.status for r in stored.recipients] == [qfile.BOUNCED]


def test_session_discard(queue: Queue, tmp_path: Path, log: Path) -> None:
    settings = queue.settings(body_checks=rules(tmp_path, "/^trigger/ DISCARD\n"))
    result = converse(settings, smtp_env(), BODY_MESSAGE)
    assert result.status == "ok" and result.reply.startswith("2.0.0 Ok: queued as ")
    assert list(queue.incoming.iterdir()) == []
    assert f"{result.queue_id}: discard: body trigger here from localhost" in log.read_text()


def test_session_hold(queue: Queue, tmp_path: Path) -> None:
    settings = queue.settings(header_checks=rules(tmp_path, "/^Subject: hi/ HOLD\n"))
    result = converse(settings, smtp_env(), BODY_MESSAGE)
    assert result.status == "ok"
    assert [p.name for p in queue.hold.iterdir()] == [result.queue_id]
    assert list(queue.incoming.iterdir()) == []
    _, data = qfile.read_all(str(queue.hold / result.queue_id))
    assert data.endswith(BODY_MESSAGE)


@pytest.mark.parametrize("where", ["header", "body"])
def test_session_redirect_and_filter(queue: Queue, tmp_path: Path, where: str) -> None:
    pattern = "/^Subject: hi/" if where == "header" else "/^trigger/"
    checks = {f"{where}_checks": rules(tmp_path, f"{pattern} REDIRECT spam@example.net\n"
                                       f"{pattern} FILTER error:filtered\n")}
    result = converse(queue.settings(**checks), smtp_env(), BODY_MESSAGE)   # only the first rule fires
    assert result.status == "ok"
    env, data = qfile.read_all(str(queue.incoming / result.queue_id))
    assert [r.address for r in env.recipients] == ["spam@example.net"]
    assert data.endswith(BODY_MESSAGE) and data.startswith(b"Received: from client.example")
    assert [p.name for p in queue.incoming.iterdir()] == [result.queue_id]    # no temporary file left
    result = converse(queue.settings(**{f"{where}_checks": rules(tmp_path, f"{pattern} FILTER error:x\n", "f")}),
                      smtp_env(), BODY_MESSAGE)
    env = qfile.read_envelope(str(queue.incoming / result.queue_id))
    assert env.attrs["content_filter"] == "error:x"
    assert [r.address for r in env.recipients] == ["bob@test.example"]


def test_session_no_header_body_checks(queue: Queue, tmp_path: Path) -> None:
    settings = queue.settings(header_checks=rules(tmp_path, "/./ REJECT\n"))
    result = converse(settings, smtp_env(overrides="no_header_body_checks"), BODY_MESSAGE)
    assert result.status == "ok"
