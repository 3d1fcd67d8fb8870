"""bounce under a real master: requests on private/bounce, notices queued by the real cleanup.

Most tests use a master.cf with only cleanup and bounce (no qmgr), so every
notice stays in incoming/ where the test reads it back; the last one runs
the whole system and catches the notice with an SMTP peer.
"""

from __future__ import annotations

import email
import os
import pwd
import smtplib
import socket
from email import policy
from email.message import EmailMessage, Message

from conftest import IS_ROOT, MAIL_OWNER, wait_for
from smtppeers import ThreadPeer

from postpy.ipc import codec
from postpy.ipc.messages import BounceRequest, BounceResult
from postpy.queue import qfile
from postpy.queue.qid import new_queue_id

MASTER_CF = (
    "cleanup   unix  -  -  n  -  0  cleanup\n"
    "bounce    unix  -  -  n  -  0  bounce\n"
)
CONTENT = (b"From: alice@example.org\nTo: bob@example.net, carol@mx.test.example\n"
           b"Subject: plans\nMessage-ID: <plans@example.org>\n\nSee you at noon.\n")


def place(mta, sender: str, rcpts: list[qfile.Recipient], log: list[qfile.LogEntry],
          attrs: dict[str, str] | None = None) -> str:
    """A queue file in deferred/ with L records, owned as the daemons expect."""
    queue_id = new_queue_id()
    env = qfile.Envelope(sender, rcpts, arrival=1_756_116_672.0, attrs=attrs or {})
    path = qfile.write_queue_file(str(mta.queue_dir / "deferred"), queue_id, env, CONTENT)
    qfile.append_log(path, log)
    if IS_ROOT:
        entry = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return queue_id


def ask(mta, *requests: BounceRequest) -> list[BounceResult]:
    """Send requests on one connection (as qmgr does) and read the answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(mta.queue_dir / "private" / "bounce"))
        results = []
        for request in requests:
            codec.send(sock, request)
            results.append(codec.expect(codec.recv(sock, "bounce"), BounceResult, "bounce"))
        return results


def read_notice(mta, queue_id: str) -> tuple[qfile.Envelope, EmailMessage]:
    env, content = qfile.read_all(str(mta.queue_dir / "incoming" / queue_id))
    msg = email.message_from_bytes(content, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return env, msg


def status_blocks(msg: EmailMessage) -> list[Message]:
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def test_failure_notice_is_queued_for_the_sender(mta_factory):
    mta = mta_factory(master_cf=MASTER_CF)
    rcpts = [qfile.Recipient("bob@example.net", orcpt="rfc822;bob@example.net"),
             qfile.Recipient("carol@mx.test.example", orig="carol"),
             qfile.Recipient("dave@example.net", notify="NEVER")]
    log = [qfile.LogEntry(0, "delayed", "4.4.1", "connect to mx.example.net[192.0.2.1]:25: Connection refused"),
           qfile.LogEntry(0, "failed", "5.1.1", "host mx.example.net[192.0.2.1] said: 550 5.1.1 "
                          "<bob@example.net>: User unknown (in reply to RCPT TO command)"),
           qfile.LogEntry(1, "failed", "5.1.1", 'unknown user: "carol"'),
           qfile.LogEntry(2, "failed", "5.1.1", "unknown user: \"dave\"")]
    queue_id = place(mta, "alice@example.org", rcpts, log, {"envid": "ENV7", "ret": "HDRS"})
    (result,) = ask(mta, BounceRequest(queue_id, "deferred", "failure", [0, 1, 2]))
    assert result.status == "ok", result.text
    assert mta.queue_ids("incoming") == [result.queue_id]
    mta.wait_log(rf"postpy/bounce\[\d+\]: {queue_id}: sender non-delivery notification: {result.queue_id}")
    env, msg = read_notice(mta, result.queue_id)
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["alice@example.org"]
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["To"] == "alice@example.org"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.test.example"
    per_message, bob, carol = status_blocks(msg)        # dave said NOTIFY=NEVER
    assert per_message["Reporting-MTA"] == "dns; mx.test.example"
    assert per_message["X-Postpy-Queue-ID"] == queue_id
    assert per_message["Original-Envelope-Id"] == "ENV7"
    assert (bob["Final-Recipient"], bob["Action"], bob["Status"]) == (
        "rfc822; bob@example.net", "failed", "5.1.1")
    assert bob["Original-Recipient"] == "rfc822; bob@example.net"
    assert bob["Remote-MTA"] == "dns; mx.example.net"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: User unknown"
    assert carol["Diagnostic-Code"] == 'x-unix; unknown user: "carol"'
    returned = list(msg.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"      # RET=HDRS
    assert "Subject: plans" in str(returned.get_payload())
    assert "noon" not in str(returned.get_payload())
    # the original is untouched: removing it is qmgr's decision
    assert mta.queue_ids("deferred") == [queue_id]


def test_null_sender_notice_goes_to_postmaster_and_double_bounce_stops(mta_factory):
    mta = mta_factory(master_cf=MASTER_CF)
    log = [qfile.LogEntry(0, "failed", "5.1.1", "unknown user: \"nobody\"")]
    bounced_bounce = place(mta, "", [qfile.Recipient("nobody@example.net")], log)
    double = place(mta, "double-bounce@mx.test.example", [qfile.Recipient("postmaster@mx.test.example")], log)
    first, second = ask(mta, BounceRequest(bounced_bounce, "deferred", "failure", [0]),
                        BounceRequest(double, "deferred", "failure", [0]))
    assert first.status == "ok" and first.queue_id
    assert (second.status, second.queue_id) == ("ok", "")
    assert mta.queue_ids("incoming") == [first.queue_id]
    env, msg = read_notice(mta, first.queue_id)
    assert env.sender == "double-bounce@mx.test.example"
    assert [r.address for r in env.recipients] == ["postmaster@mx.test.example"]
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert status_blocks(msg)[1]["Final-Recipient"] == "rfc822; nobody@example.net"
    mta.wait_log(rf"{bounced_bounce}: postmaster non-delivery notification: {first.queue_id}")
    mta.wait_log(rf"{double}: undeliverable postmaster notification discarded")


def test_delay_and_success_notices_and_nothing_to_report(mta_factory):
    mta = mta_factory(master_cf=MASTER_CF)
    rcpts = [qfile.Recipient("bob@example.net", notify="SUCCESS,DELAY"), qfile.Recipient("eve@example.net")]
    log = [qfile.LogEntry(0, "delivered", "2.0.0", "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok"),
           qfile.LogEntry(1, "delayed", "4.4.1", "connection timed out")]
    queue_id = place(mta, "alice@example.org", rcpts, log)
    success, delay, nothing = ask(mta, BounceRequest(queue_id, "deferred", "success", [0]),
                                  BounceRequest(queue_id, "deferred", "delay", [1]),
                                  BounceRequest(queue_id, "deferred", "success", [1]))
    assert success.status == delay.status == nothing.status == "ok"
    assert nothing.queue_id == ""
    assert sorted(mta.queue_ids("incoming")) == sorted([success.queue_id, delay.queue_id])
    _env, msg = read_notice(mta, success.queue_id)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert status_blocks(msg)[1]["Action"] == "delivered"
    _env, msg = read_notice(mta, delay.queue_id)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    block = status_blocks(msg)[1]
    assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")
    assert block["Will-Retry-Until"]
    mta.wait_log(rf"{queue_id}: sender delivery status notification: {success.queue_id}")
    mta.wait_log(rf"{queue_id}: sender delay notification: {delay.queue_id}")


def test_missing_queue_file_is_a_temporary_failure(mta_factory):
    mta = mta_factory(master_cf=MASTER_CF)
    (result,) = ask(mta, BounceRequest(new_queue_id(), "deferred", "failure", [0]))
    assert result.status == "temp"
    assert "not found" in result.text
    assert mta.queue_ids("incoming") == []


def test_whole_system_returns_an_undeliverable_message(mta_factory):
    """smtpd -> cleanup -> qmgr (error: transport) -> bounce -> cleanup -> qmgr -> smtp -> peer."""
    with ThreadPeer() as peer:
        mta = mta_factory(transport_maps=(f"inline:{{{{nowhere.example=error:5.1.1 no such user here}}, "
                                          f"example.org=smtp:[127.0.0.1]:{peer.port}}}"))
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=20) as client:
            client.sendmail("alice@example.org", ["bob@nowhere.example"],
                            b"From: alice@example.org\r\nSubject: hello\r\n\r\nhi there\r\n")
        mta.wait_log(r"sender non-delivery notification: ", 30)
        wait_for(lambda: peer.state.messages, 30, "the notice at the SMTP peer")
        sender, rcpts = peer.state.envelopes[0]
        data = peer.state.messages[0]
    assert (sender, rcpts) == ("", ["alice@example.org"])
    assert data.endswith(b"\r\n.\r\n")
    data = data[:-3].replace(b"\r\n..", b"\r\n.")
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    per_message, block = status_blocks(msg)
    assert per_message["Reporting-MTA"] == "dns; mx.test.example"
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; bob@nowhere.example", "failed", "5.1.1")
    assert block["Diagnostic-Code"] == "x-unix; no such user here"
    returned = list(msg.iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    assert "hi there" in returned.as_string()
    original = per_message["X-Postpy-Queue-ID"]
    mta.wait_log(rf"{original}: sender non-delivery notification: \w+")
