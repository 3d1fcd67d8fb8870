"""header_checks and body_checks in a real system: smtplib (or sendmail) in,
cleanup's actions seen from outside -- the SMTP reply, the queue, the log,
and what local delivers to two alias files.

One system serves every test of this module (the tables hold a rule per
test, each keyed on its own Subject); every wait is bounded.
"""

from __future__ import annotations

import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IS_ROOT, MTA, ROOT, ensure_system_users, free_port, wait_for

HEADER_CHECKS = """\
# one rule per test
/^Subject: reject me/            REJECT no spam here
/^Subject: discard me/           DISCARD dropped by test
/^Subject: hold me/              HOLD held by test
/^Subject: warn me/              WARN looked at
/^X-Remove-Me:/                  IGNORE
/^Subject: replace me/           REPLACE Subject: replaced subject
/^X-Mark:/                       PREPEND X-Prepended: before the mark
/^Subject: redirect me/          REDIRECT spam@test.example
/^Subject: filter me/            FILTER filt:
/^Subject: local reject/         REJECT
/^Content-(Type|Disposition):.*name="?[^"]*\\.exe"?/   REJECT Attachment type not allowed
"""
BODY_CHECKS = """\
/^reject this body line$/        REJECT 5.7.0 body rejected
"""
SERVICES = ("filt unix - n n - - pipe user=nobody argv=/usr/bin/tee {out}\n"
            "127.0.0.1:{port} inet n - n - - smtpd -o receive_override_options=no_header_body_checks\n")
CONTEXT = r"from localhost\[127\.0\.0\.1\]; from=<alice@example\.org> to=<box@test\.example> " \
          r"proto=ESMTP helo=<client\.example>"


class System:
    def __init__(self, mta: MTA, unchecked_port: int) -> None:
        self.mta = mta
        self.unchecked_port = unchecked_port     # an smtpd with no_header_body_checks
        self.box = mta.base / "mail" / "box.mbox"
        self.spam = mta.base / "mail" / "spam.mbox"
        self.filtered = mta.base / "mail" / "filtered.out"

    def send(self, subject: str, body: str = "hello\r\n", extra: str = "",
             rcpt: str = "box@test.example", port: int = 0) -> str:
        """Send one message; the queue ID of the 250 reply."""
        with smtplib.SMTP("127.0.0.1", port or self.mta.port, timeout=30) as client:
            client.ehlo("client.example")
            client.mail("alice@example.org")
            client.rcpt(rcpt)
            code, reply = client.data(f"Subject: {subject}\r\n{extra}\r\n{body}".encode())
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[1]

    def delivered(self, path: Path, marker: str) -> str:
        """Wait until ``marker`` is in the mailbox file; its text."""
        wait_for(lambda: path.exists() and marker in path.read_text(errors="replace"), 20,
                 f"{marker!r} in {path.name}")
        return path.read_text(errors="replace")

    def message_in(self, path: Path, marker: str) -> str:
        """The one message of the mbox that holds ``marker``."""
        text = self.delivered(path, marker)
        messages = [m for m in text.split("\nFrom ") if marker in m]
        assert len(messages) == 1, text
        return messages[0]


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    ensure_system_users()
    base = Path(tempfile.mkdtemp(prefix="postpy-test-checks-"))
    base.chmod(0o755)
    unchecked_port = free_port()
    master_cf = (ROOT / "etc" / "master.cf").read_text() + SERVICES.format(
        out=base / "mail" / "filtered.out", port=unchecked_port)
    mta = MTA(base, master_cf, {})
    (mta.config_dir / "header_checks").write_text(HEADER_CHECKS)
    (mta.config_dir / "body_checks").write_text(BODY_CHECKS)
    mta.write_main_cf({**mta.params, "header_checks": f"regexp:{mta.config_dir}/header_checks",
                       "body_checks": f"pcre:{mta.config_dir}/body_checks"})
    mta.write_aliases(f"postmaster: root\nbox: {base}/mail/box.mbox\nspam: {base}/mail/spam.mbox\n")
    mta.start()
    try:
        yield System(mta, unchecked_port)
    finally:
        mta.stop()
        shutil.rmtree(base, ignore_errors=True)


def nothing_queued(mta: MTA) -> bool:
    return all(mta.queue_ids(q) == [] for q in ("incoming", "active", "deferred", "hold"))


def test_reject_is_550_at_end_of_data_and_nothing_is_queued(system: System) -> None:
    mta = system.mta
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("alice@example.org")
        client.rcpt("box@test.example")
        code, reply = client.data(b"Subject: reject me please\r\n\r\nbody\r\n")
        assert (code, reply) == (550, b"5.7.1 no spam here")
        assert client.noop()[0] == 250                     # the session goes on
    line = mta.wait_log(rf"(\S+): reject: header Subject: reject me please {CONTEXT}: "
                        r"5\.7\.1 no spam here")
    assert mta.log().count(f"{line.group(1)}: reject: header") == 1   # (smtpd logs its reply too)
    wait_for(lambda: nothing_queued(mta), 10, "an empty queue")


def test_body_checks_reject_a_body_line(system: System) -> None:
    mta = system.mta
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("alice@example.org", ["box@test.example"],
                            "Subject: innocent\r\n\r\nfirst\r\nreject this body line\r\nlast\r\n")
    # smtpd's reply code for a 5.7.0 refusal is its own business (replies.from_cleanup)
    assert (info.value.smtp_code // 100, info.value.smtp_error) == (5, b"5.7.0 body rejected")
    mta.wait_log(rf"reject: body reject this body line {CONTEXT}: 5\.7\.0 body rejected")
    wait_for(lambda: nothing_queued(mta), 10, "an empty queue")


def test_discard_accepts_and_delivers_nothing(system: System) -> None:
    mta = system.mta
    queue_id = system.send("discard me now")
    mta.wait_log(rf"{queue_id}: discard: header Subject: discard me now {CONTEXT}: dropped by test")
    system.send("after the discard")                       # delivered: the discarded one was not
    text = system.delivered(system.box, "Subject: after the discard")
    assert "discard me now" not in text
    assert f"{queue_id}: to=<" not in mta.log()


def test_hold_goes_to_hold_queue_and_mailq_marks_it(system: System) -> None:
    mta = system.mta
    queue_id = system.send("hold me there")
    mta.wait_log(rf"{queue_id}: hold: header Subject: hold me there {CONTEXT}: held by test")
    assert queue_id in mta.queue_ids("hold") and queue_id not in mta.queue_ids("incoming")
    listing = mta.run("mailq", timeout=30)
    assert f"{queue_id}!" in listing.stdout, listing
    released = mta.run("postsuper", "-H", queue_id, timeout=30)
    assert released.returncode == 0, released
    system.delivered(system.box, "Subject: hold me there")


def test_warn_logs_and_delivers(system: System) -> None:
    queue_id = system.send("warn me gently")
    system.mta.wait_log(rf"{queue_id}: warning: header Subject: warn me gently {CONTEXT}: looked at")
    system.delivered(system.box, "Subject: warn me gently")


def test_ignore_replace_and_prepend_edit_the_delivered_header(system: System) -> None:
    queue_id = system.send("replace me", extra="X-Remove-Me: secret\r\nX-Mark: here\r\n",
                           body="edited headers\r\n")
    system.mta.wait_log(rf"{queue_id}: replace: header Subject: replace me {CONTEXT}: "
                        r"Subject: replaced subject")
    system.mta.wait_log(rf"{queue_id}: prepend: header X-Mark: here {CONTEXT}: "
                        r"X-Prepended: before the mark")
    message = system.message_in(system.box, "edited headers")
    header = message.split("\n\n", 1)[0]
    assert "Subject: replaced subject\n" in header and "replace me" not in header
    assert "X-Remove-Me" not in message
    assert "X-Prepended: before the mark\nX-Mark: here\n" in header


def test_redirect_delivers_to_the_new_address(system: System) -> None:
    queue_id = system.send("redirect me away", body="redirected body\r\n")
    system.mta.wait_log(rf"{queue_id}: redirect: header Subject: redirect me away {CONTEXT}: "
                        r"spam@test\.example")
    system.delivered(system.spam, "redirected body")
    system.mta.wait_log(rf"{queue_id}: to=<spam@test\.example>, relay=local.*status=sent")
    assert f"{queue_id}: to=<box@test.example>" not in system.mta.log()


@pytest.mark.skipif(not IS_ROOT, reason="needs root: pipe switches to user=")
def test_filter_routes_to_the_named_transport(system: System) -> None:
    queue_id = system.send("filter me through", body="filtered body\r\n")
    system.mta.wait_log(rf"{queue_id}: filter: header Subject: filter me through {CONTEXT}: filt:")
    system.mta.wait_log(rf"{queue_id}: to=<box@test\.example>, relay=filt.*status=sent")
    assert "filtered body" in system.delivered(system.filtered, "filtered body")
    assert f"{queue_id}: to=<box@test.example>, relay=local" not in system.mta.log()


def test_local_submission_rejected_is_returned_to_the_sender(system: System) -> None:
    mta = system.mta
    sent = mta.run("sendmail", "-f", "box@test.example", "box@test.example",
                   input="Subject: local reject\n\nfrom sendmail\n")
    assert sent.returncode == 0, sent
    line = mta.wait_log(r"(\S+): reject: header Subject: local reject from local; "
                        r"from=<box@test\.example> to=<box@test\.example>.*: "
                        r"5\.7\.1 Message content rejected", 20)
    mta.wait_log(rf"{line.group(1)}: from=<box@test\.example>: returned to sender")
    notice = system.delivered(system.box, "Message content rejected")
    assert "Subject: local reject" in notice


def test_mime_part_header_is_checked(system: System) -> None:
    """mime_header_checks defaults to $header_checks: a part's Content-Type is seen."""
    mta = system.mta
    body = ("--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n"
            "Content-Type: application/octet-stream; name=\"run.exe\"\r\n\r\nTVqQ\r\n--b1--\r\n")
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("alice@example.org", ["box@test.example"],
                            "Subject: with attachment\r\nMIME-Version: 1.0\r\n"
                            "Content-Type: multipart/mixed; boundary=b1\r\n\r\n" + body)
    assert (info.value.smtp_code, info.value.smtp_error) == (550, b"5.7.1 Attachment type not allowed")
    mta.wait_log(r"reject: header Content-Type: application/octet-stream; name=\"run\.exe\" "
                 rf"{CONTEXT}: 5\.7\.1 Attachment type not allowed")


def test_no_header_body_checks_turns_them_off(system: System) -> None:
    queue_id = system.send("reject me not", body="not inspected\r\nreject this body line\r\n",
                           port=system.unchecked_port)
    system.delivered(system.box, "not inspected")
    assert f"{queue_id}: reject:" not in system.mta.log()
