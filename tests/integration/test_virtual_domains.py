"""Virtual mailbox domains, relay recipients and relocated users with a real
master: RCPT-time refusals (smtplib), the relocated bounce of a local
submission, and virtual_transport = virtual without a virtual service (mail
waits, and the log says why).  The Dovecot deliveries through
virtual_transport and mailbox_transport are in test_lmtp_dovecot.py."""

from __future__ import annotations

import smtplib

from conftest import wait_for

CHECKED = {
    "virtual_mailbox_domains": "v.test",
    "virtual_mailbox_maps": "inline:{ bob@v.test=ok }",
    "virtual_transport": "lmtp:unix:private/nowhere",
    "relay_domains": "relay.example",
    "relay_recipient_maps": "inline:{ carol@relay.example=ok }",
    "relocated_maps": "inline:{ gone=gone@new.example, old@v.test=bob@v.test }",
    "local_recipient_maps": "inline:{ root=x, postmaster=x }",
}
REJECTED = b"Recipient address rejected:"


def test_rcpt_refuses_unknown_and_relocated_recipients(mta_factory) -> None:
    mta = mta_factory(**CHECKED)
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("sender@remote.example")
        assert client.rcpt("bob@v.test")[0] == 250
        assert client.rcpt("nobody@v.test") == (550, b"5.1.1 <nobody@v.test>: " + REJECTED +
                                                b" User unknown in virtual mailbox table")
        assert client.rcpt("carol@relay.example")[0] == 250
        assert client.rcpt("dave@relay.example") == (550, b"5.1.1 <dave@relay.example>: " + REJECTED +
                                                     b" User unknown in relay recipient table")
        assert client.rcpt("gone@test.example") == (550, b"5.1.6 <gone@test.example>: " + REJECTED +
                                                    b" User has moved to gone@new.example")
        assert client.rcpt("old@v.test") == (550, b"5.1.6 <old@v.test>: " + REJECTED +
                                             b" User has moved to bob@v.test")
        assert client.rcpt("root@test.example")[0] == 250
        client.rset()
    mta.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.6 "
                 r"<gone@test\.example>: Recipient address rejected: User has moved to gone@new\.example")
    verified = mta.run("sendmail", "-bv", "gone@test.example", "dave@relay.example", "carol@relay.example")
    assert verified.stdout.splitlines() == [
        "gone@test.example... undeliverable: 5.1.6 User has moved to gone@new.example",
        "dave@relay.example... undeliverable: 5.1.1 User unknown in relay recipient table",
        "carol@relay.example... deliverable via smtp to relay.example"], verified


def test_relocated_local_submission_bounces_with_the_new_address(mta_factory) -> None:
    mta = mta_factory(**CHECKED)
    sent = mta.run("sendmail", "-f", "root@mx.test.example", "gone@test.example",
                   input="Subject: are you there\n\nhello\n")
    assert sent.returncode == 0, sent.stderr
    found = mta.wait_log(r"(\w+): to=<gone@test\.example>, relay=none, .*dsn=5\.1\.6, "
                         r"status=bounced \(User has moved to gone@new\.example\)", 20)
    mta.wait_log(rf"{found.group(1)}: removed", 20)
    mailbox = mta.base / "mail" / "root"
    wait_for(lambda: mailbox.exists() and b"Undelivered Mail" in mailbox.read_bytes(), 20,
             "the bounce in root's mailbox")
    notice = mailbox.read_bytes()
    assert b"User has moved to gone@new.example" in notice and b"Status: 5.1.6" in notice


def test_virtual_transport_without_a_virtual_service_defers(mta_factory) -> None:
    """Postfix's default virtual_transport = virtual, and postpy has no virtual(8):
    the mail waits in the queue, the log says which service is missing and why."""
    mta = mta_factory(virtual_mailbox_domains="v.test", virtual_mailbox_maps="inline:{ bob@v.test=ok }")
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail("sender@remote.example", ["bob@v.test"], b"Subject: waits\r\n\r\nhi\r\n")
    qid = mta.wait_log(r"(\w+): to=<bob@v\.test>, relay=none, .*dsn=4\.3\.0, "
                       r"status=deferred \(mail transport unavailable\)", 20).group(1)
    assert (f'warning: {qid}: mail transport unavailable: no "virtual" service in master.cf '
            "(named by virtual_transport = virtual)") in mta.log()
    wait_for(lambda: qid in mta.queue_ids("deferred"), 10, "the message in the deferred queue")
    verified = mta.run("sendmail", "-bv", "bob@v.test")
    assert verified.stdout == ('bob@v.test... deferred: 4.3.0 mail transport unavailable: no "virtual" '
                               "service in master.cf (named by virtual_transport = virtual)\n"), verified
