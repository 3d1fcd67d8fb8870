"""postpy's lmtp agent delivering into a real Dovecot LMTP server (dovecot-lmtpd)
with virtual users from a passwd-file, the quota plugin and Pigeonhole Sieve.

Each test starts a real master (mta_factory) and a real Dovecot on a temporary
tree.  Dovecot's IMAP server is not installed on the test host (it conflicts
with cyrus-imapd), so mailboxes are read with ``doveadm fetch`` against the
same Dovecot configuration: the view IMAP would give.
"""

from __future__ import annotations

import smtplib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MAIL_OWNER, MTA, free_port, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dovecot_lmtp_helper  # noqa: E402
from dovecot_lmtp_helper import DovecotLmtp, User  # noqa: E402

pytestmark = pytest.mark.skipif(bool(dovecot_lmtp_helper.available()),
                                reason=dovecot_lmtp_helper.available() or "ok")

# The README's worked example "Dovecot with virtual mailboxes over LMTP", as
# written there (main.cf lines and the vmailbox table; example.org is v.test here,
# /etc/postpy the test's configuration directory).
README_MAIN_CF = {
    "virtual_mailbox_domains": "v.test",
    "virtual_mailbox_maps": "lmdb:/etc/postpy/vmailbox",
    "virtual_transport": "lmtp:unix:private/dovecot-lmtp",
}
README_VMAILBOX = """\
# postmap /etc/postpy/vmailbox after a change; the value is not used with LMTP
alice@v.test    ok
bob@v.test      ok
carol@v.test    ok
full@v.test     ok
"""
# The same mailboxes routed with transport_maps (the README's other form).
TRANSPORT_MAPS_MAIN_CF = {
    "relay_domains": "v.test",
    "transport_maps": "inline:{ v.test=lmtp:unix:private/dovecot-lmtp }",
    "lmtp_destination_recipient_limit": "50",
}
CAROL_SIEVE = """\
require ["fileinto", "reject"];
if header :contains "subject" "project" { fileinto "Projects"; stop; }
if header :contains "subject" "offer" { reject "No offers, thank you."; stop; }
"""
FAST_RETRY = {"minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s"}


def users() -> list[User]:
    return [User("alice@v.test"), User("bob@v.test"), User("full@v.test", quota="1K"),
            User("carol@v.test", sieve=CAROL_SIEVE)]


@pytest.fixture
def dovecots() -> Iterator[Callable[..., DovecotLmtp]]:
    started: list[DovecotLmtp] = []

    def start(people: list[User] | None = None, **kw: str | int) -> DovecotLmtp:
        d = dovecot_lmtp_helper.start_dovecot_lmtp(people or users(), **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield start
    for d in started:
        dovecot_lmtp_helper.remove(d)


def submit(mta: MTA, rcpts: list[str], subject: str, body: str = "hello\r\n",
           sender: str = "alice@v.test") -> str:
    data = f"From: {sender}\r\nSubject: {subject}\r\n\r\n{body}".encode()
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail(sender, rcpts, data)
    return mta.wait_log(rf"(\w+): from=<{sender}>, size=\d+, nrcpt={len(rcpts)}", 20).group(1)


def inbox(d: DovecotLmtp, user: str, mailbox: str = "INBOX", field: str = "hdr") -> list[str]:
    try:
        return d.fetch(user, mailbox, field)
    except RuntimeError:
        return []       # the mailbox does not exist yet


def readme_system(mta_factory) -> MTA:
    """A system configured as the README example says (not started)."""
    mta = mta_factory(start=False)
    params = {k: v.replace("/etc/postpy", str(mta.config_dir)) for k, v in README_MAIN_CF.items()}
    mta.write_main_cf({**mta.params, **params})
    (mta.config_dir / "vmailbox").write_text(README_VMAILBOX)
    mta.run("postmap", str(mta.config_dir / "vmailbox"), check=True)
    return mta


def test_virtual_mailboxes_with_a_user_over_quota(mta_factory, dovecots) -> None:
    """The README example: one message to three virtual users, one of them over
    quota; Dovecot's per-recipient replies after the dot become separate outcomes
    (qmgr routes virtual_mailbox_domains to virtual_transport)."""
    mta = readme_system(mta_factory)
    mta.start()
    d = dovecots(socket_path=str(mta.queue_dir / "private" / "dovecot-lmtp"), socket_user=MAIL_OWNER,
                 submission_host=f"127.0.0.1:{mta.port}")
    big = "x" * 70 + "\r\n"
    qid = submit(mta, ["bob@v.test", "full@v.test", "carol@v.test"], "status report", big * 40)
    relay = r"relay=private/dovecot-lmtp\[private/dovecot-lmtp\]"
    mta.wait_log(rf"postpy/lmtp\[\d+\]: {qid}: to=<bob@v.test>, {relay}, .*dsn=2.0.0, "
                 r"status=sent \(250 2.0.0 <bob@v.test> \S+ Saved\)", 30)
    mta.wait_log(rf"{qid}: to=<carol@v.test>, {relay}, .*status=sent", 10)
    mta.wait_log(rf"{qid}: to=<full@v.test>, {relay}, .*dsn=5.2.2, status=bounced \(host "
                 r"private/dovecot-lmtp\[private/dovecot-lmtp\] said: 552 5.2.2 <full@v.test> Quota "
                 r"exceeded \(mailbox for user is full\) \(in reply to end of DATA command\)\)", 10)
    # The bounce reaches the sender's own Dovecot mailbox, through lmtp too.
    mta.wait_log(r"to=<alice@v.test>, relay=private/dovecot-lmtp.*status=sent", 30)
    wait_for(lambda: not mta.queue_ids("active") and not mta.queue_ids("incoming")
             and not mta.queue_ids("deferred"), 20, "an empty queue")
    for user in ("bob@v.test", "carol@v.test"):
        [header] = inbox(d, user)
        assert "Subject: status report" in header and "by lmtp.test with LMTP" in header
    assert inbox(d, "full@v.test") == []
    [notice] = inbox(d, "alice@v.test", field="text")
    assert "Subject: Undelivered Mail Returned to Sender" in notice
    assert "<full@v.test>" in notice and "Status: 5.2.2" in notice
    assert "Diagnostic-Code: smtp; 552 5.2.2 <full@v.test> Quota exceeded" in notice


def test_sieve_files_into_a_folder_and_rejects(mta_factory, dovecots) -> None:
    mta = mta_factory(**TRANSPORT_MAPS_MAIN_CF)
    d = dovecots(socket_path=str(mta.queue_dir / "private" / "dovecot-lmtp"), socket_user=MAIL_OWNER,
                 submission_host=f"127.0.0.1:{mta.port}")
    filed = submit(mta, ["carol@v.test"], "project plans")
    mta.wait_log(rf"{filed}: to=<carol@v.test>, relay=private/dovecot-lmtp.*status=sent", 30)
    rejected = submit(mta, ["carol@v.test"], "special offer")
    mta.wait_log(rf"{rejected}: to=<carol@v.test>, relay=private/dovecot-lmtp.*status=sent", 30)
    # Pigeonhole sends its rejection as a new message through submission_host (postpy's
    # smtpd) to the envelope sender; postpy delivers it to alice over LMTP.
    mta.wait_log(r"from=<>, size=\d+, nrcpt=1", 30)
    mta.wait_log(r"to=<alice@v.test>, relay=private/dovecot-lmtp.*status=sent", 30)
    assert "Projects" in d.mailboxes("carol@v.test")
    [kept] = inbox(d, "carol@v.test", "Projects")
    assert "Subject: project plans" in kept
    assert inbox(d, "carol@v.test") == []          # the offer was not kept
    [reject] = inbox(d, "alice@v.test", field="text")
    assert "Subject: Rejected: special offer" in reject
    assert "No offers, thank you." in reject
    assert "Return-Path: <>" in reject


def test_quota_tempfail_defers_over_tcp_and_limits_recipients(mta_factory, dovecots) -> None:
    """``lmtp:inet:host:port``; Dovecot told to answer 452 for a full mailbox: that
    recipient is deferred (and retried), the others delivered; two recipients per
    LMTP transaction, one at a time on one reused connection."""
    port = free_port()
    mta = mta_factory(transport_maps=f"inline:{{ v.test=lmtp:inet:127.0.0.1:{port} }}",
                      lmtp_destination_recipient_limit="2",
                      lmtp_destination_concurrency_limit="1", **FAST_RETRY)
    d = dovecots(tcp_port=port, extra="quota_full_tempfail = yes")
    big = "x" * 70 + "\r\n"
    qid = submit(mta, ["alice@v.test", "bob@v.test", "carol@v.test", "full@v.test"], "tcp", big * 40,
                 sender="sender@test.example")
    relay = rf"relay=127.0.0.1\[127.0.0.1\]:{port}"
    mta.wait_log(rf"{qid}: to=<full@v.test>, {relay}, .*dsn=4.2.2, status=deferred \(host "
                 r"127.0.0.1\[127.0.0.1\] said: 452 4.2.2 <full@v.test> Quota exceeded", 30)
    for user in ("alice@v.test", "bob@v.test", "carol@v.test"):
        mta.wait_log(rf"{qid}: to=<{user}>, {relay}, .*status=sent", 10)
    assert f"{qid}: to=<carol@v.test>, {relay.replace(chr(92), '')}, conn_use=2" in mta.log()
    # Only the full mailbox is left, retried and deferred again; nothing bounced.
    wait_for(lambda: mta.log().count(f"{qid}: to=<full@v.test>") >= 2, 30, "a retry")
    assert qid in mta.queue_ids("deferred") or qid in mta.queue_ids("active")
    assert "status=bounced" not in mta.log()
    for user in ("alice@v.test", "bob@v.test", "carol@v.test"):
        assert len(inbox(d, user)) == 1, user
    assert inbox(d, "full@v.test") == []


def test_virtual_transport_to_dovecot(mta_factory, dovecots) -> None:
    """The README example; an unknown user of the virtual domain is refused at RCPT."""
    mta = readme_system(mta_factory)
    mta.start()
    d = dovecots(socket_path=str(mta.queue_dir / "private" / "dovecot-lmtp"), socket_user=MAIL_OWNER)
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.mail("postmaster@test.example")
        assert client.rcpt("nobody@v.test") == (550, b"5.1.1 <nobody@v.test>: Recipient address "
                                                     b"rejected: User unknown in virtual mailbox table")
    qid = submit(mta, ["bob@v.test"], "virtual", sender="postmaster@test.example")
    mta.wait_log(rf"{qid}: to=<bob@v.test>, relay=private/dovecot-lmtp\[private/dovecot-lmtp\], "
                 r".*status=sent", 30)
    [header] = inbox(d, "bob@v.test")
    assert "Subject: virtual" in header
    verified = mta.run("sendmail", "-bv", "bob@v.test", "nobody@v.test")
    assert verified.stdout.splitlines() == [
        "bob@v.test... deliverable via lmtp to unix:private/dovecot-lmtp",
        "nobody@v.test... undeliverable: 5.1.1 User unknown in virtual mailbox table"], verified


# local(8)'s mailbox_transport and fallback_transport: users of a local domain
# whose mailboxes are in Dovecot (no passwd entries).
LOCAL_DOVECOT_USERS = [User("carol@test.example"), User("dave@test.example")]


def test_mailbox_transport_after_aliases(mta_factory, dovecots) -> None:
    """local expands the alias, then hands the mailbox to lmtp with the expanded
    address; the lmtp agent logs the delivery (orig_to= the recipient)."""
    mta = mta_factory(start=False, myorigin="test.example", local_recipient_maps="",
                      mailbox_transport="lmtp:unix:private/dovecot-lmtp")
    mta.write_aliases("postmaster: root\ninfo: carol\n")
    mta.start()
    d = dovecots(LOCAL_DOVECOT_USERS, socket_path=str(mta.queue_dir / "private" / "dovecot-lmtp"),
                 socket_user=MAIL_OWNER)
    qid = submit(mta, ["info@test.example"], "via alias", sender="sender@remote.example")
    mta.wait_log(rf"postpy/lmtp\[\d+\]: {qid}: to=<carol@test.example>, orig_to=<info@test.example>, "
                 r"relay=private/dovecot-lmtp\[private/dovecot-lmtp\], .*status=sent", 30)
    mta.wait_log(rf"{qid}: removed", 10)
    [header] = inbox(d, "carol@test.example")
    assert "Subject: via alias" in header
    assert "relay=local" not in mta.log()          # local logged nothing of its own


def test_fallback_transport_for_users_without_passwd_entry(mta_factory, dovecots) -> None:
    mta = mta_factory(local_recipient_maps="", fallback_transport="lmtp:unix:private/dovecot-lmtp")
    d = dovecots(LOCAL_DOVECOT_USERS, socket_path=str(mta.queue_dir / "private" / "dovecot-lmtp"),
                 socket_user=MAIL_OWNER)
    qid = submit(mta, ["dave@test.example", "root@test.example"], "fallback",
                 sender="sender@remote.example")
    mta.wait_log(rf"{qid}: to=<dave@test.example>, relay=private/dovecot-lmtp.*status=sent", 30)
    mta.wait_log(rf"{qid}: to=<root@test.example>, relay=local, .*status=sent \(delivered to mailbox\)", 30)
    [header] = inbox(d, "dave@test.example")
    assert "Subject: fallback" in header
    assert b"Subject: fallback" in (mta.base / "mail" / "root").read_bytes()
