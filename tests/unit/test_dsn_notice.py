"""bounce's request handling (postpy.bounce.notice and service.serve) against a real
cleanup session on a unix socket, in a temporary queue directory."""

from __future__ import annotations

import email
import os
import socket
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from postpy.bounce import notice
from postpy.bounce.service import serve as serve_bounce
from postpy.cleanup.headers import HeaderSettings
from postpy.cleanup.session import CleanupSettings
from postpy.cleanup.session import serve as serve_cleanup
from postpy.ipc import codec
from postpy.ipc.messages import BounceRequest, BounceResult, CleanupHello, CleanupResult
from postpy.queue import qfile
from postpy.queue.qid import new_queue_id
from postpy.util import maillog

CONTENT = b"From: alice@example.org\nTo: bob@example.net\nSubject: lunch\n\nShall we?\n"
SETTINGS = notice.BounceSettings(myhostname="mx.test.example", myorigin="test.example", timeout=10)


class Cleanup:
    """A real cleanup session per connection, served from a thread."""

    def __init__(self, reply: str = "") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("private/cleanup")
        self.sock.listen(5)
        self.sock.settimeout(0.05)
        self.reply = reply
        self.stopping = False
        self.settings = CleanupSettings(
            headers=HeaderSettings(myhostname="mx.test.example", myorigin="test.example"), timeout=10)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if self.reply:        # answer without queueing anything
                    codec.send(conn, CleanupHello("REFUSEDID"))
                    _drain(conn)
                    codec.send(conn, CleanupResult(self.reply, "REFUSEDID",
                                                   "5.3.4 Message size exceeds fixed limit"))
                else:
                    serve_cleanup(conn, self.settings)

    def stop(self) -> None:
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)     # wakes accept() at once on Linux
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def _drain(conn: socket.socket) -> None:
    codec.recv(conn)
    while codec.recv_frame(conn)[0] != codec.END:
        pass


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in ("incoming", "active", "deferred", "hold", "private", "public"):
        (tmp_path / name).mkdir()
    maillog.setup("bounce", maillog_file=str(tmp_path / "maillog"), hostname="mx")
    yield tmp_path
    maillog.setup("test", maillog_file=os.devnull)


@pytest.fixture
def cleanup(queue: Path) -> Iterator[Cleanup]:
    server = Cleanup()
    yield server
    server.stop()


def place(queue: Path, sender: str = "alice@example.org", *, where: str = "deferred",
          rcpts: list[qfile.Recipient] | None = None, attrs: dict[str, str] | None = None,
          log: list[qfile.LogEntry] | None = None, content: bytes = CONTENT) -> str:
    queue_id = new_queue_id()
    if rcpts is None:
        rcpts = [qfile.Recipient("bob@example.net")]
    env = qfile.Envelope(sender, rcpts, arrival=1_756_116_672.0, attrs=attrs or {})
    path = qfile.write_queue_file(str(queue / where), queue_id, env, content, durable=False)
    if log is None:
        log = [qfile.LogEntry(0, "delayed", "4.4.1", "connection refused"),
               qfile.LogEntry(0, "failed", "5.1.1", "unknown user: \"bob\"")]
    qfile.append_log(path, log, durable=False)
    return queue_id


def notices(queue: Path) -> dict[str, tuple[qfile.Envelope, EmailMessage]]:
    out = {}
    for name in sorted(os.listdir(queue / "incoming")):
        env, content = qfile.read_all(str(queue / "incoming" / name))
        msg = email.message_from_bytes(content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        out[name] = (env, msg)
    return out


def status_blocks(msg: EmailMessage) -> list[Message]:
    """The delivery-status part's field blocks: per-message first, then per recipient."""
    status = list(msg.iter_parts())[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def returned_message(msg: EmailMessage) -> Message:
    payload = list(msg.iter_parts())[2].get_payload()
    assert isinstance(payload, list) and isinstance(payload[0], Message)
    return payload[0]


def log_text(queue: Path) -> str:
    return (queue / "maillog").read_text()


def test_failure_notice_to_sender(queue: Path, cleanup: Cleanup) -> None:
    queue_id = place(queue, attrs={"envid": "E1"})
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    assert result.status == "ok", result.text
    found = notices(queue)
    assert list(found) == [result.queue_id]
    env, msg = found[result.queue_id]
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["alice@example.org"]
    assert env.attrs.get("origin") == "bounce"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Received"]                     # cleanup did its part
    per_message, block = status_blocks(msg)
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; bob@example.net", "failed", "5.1.1")
    assert block["Diagnostic-Code"] == 'x-unix; unknown user: "bob"'   # the newest L record
    assert per_message["Original-Envelope-Id"] == "E1"
    assert per_message["X-Postpy-Queue-ID"] == queue_id
    assert returned_message(msg)["Subject"] == "lunch"
    assert f"{queue_id}: sender non-delivery notification: {result.queue_id}" in log_text(queue)
    assert os.path.exists(queue / "deferred" / queue_id)     # the original is qmgr's business


def test_null_sender_failure_goes_to_postmaster(queue: Path, cleanup: Cleanup) -> None:
    queue_id = place(queue, sender="")
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    assert result.status == "ok" and result.queue_id
    env, msg = notices(queue)[result.queue_id]
    assert env.sender == "double-bounce@test.example"
    assert [r.address for r in env.recipients] == ["postmaster@test.example"]
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert f"{queue_id}: postmaster non-delivery notification: {result.queue_id}" in log_text(queue)


@pytest.mark.parametrize("sender", ["double-bounce@test.example", "Double-Bounce@TEST.example"])
def test_double_bounce_is_never_bounced(queue: Path, cleanup: Cleanup, sender: str) -> None:
    queue_id = place(queue, sender=sender)
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    assert (result.status, result.queue_id) == ("ok", "")
    assert notices(queue) == {}
    assert f"{queue_id}: undeliverable postmaster notification discarded" in log_text(queue)


@pytest.mark.parametrize("kind", ["delay", "success"])
def test_null_sender_gets_no_delay_or_success_notice(queue: Path, cleanup: Cleanup, kind: str) -> None:
    queue_id = place(queue, sender="", rcpts=[qfile.Recipient("bob@example.net", notify="SUCCESS,DELAY")])
    result = notice.handle(BounceRequest(queue_id, "deferred", kind, [0]), SETTINGS)
    assert (result.status, result.queue_id) == ("ok", "")
    assert notices(queue) == {}


@pytest.mark.parametrize(("kind", "notifies", "reported"), [
    ("failure", ["", "NEVER", "SUCCESS", "FAILURE,DELAY"], ["r0@example.net", "r3@example.net"]),
    ("delay", ["", "NEVER", "FAILURE", "DELAY"], ["r0@example.net", "r3@example.net"]),
    ("success", ["", "NEVER", "SUCCESS", "FAILURE,SUCCESS"], ["r2@example.net", "r3@example.net"]),
    ("failure", ["NEVER", "SUCCESS"], []),
    ("success", ["", "DELAY"], []),
])
def test_notify_is_honoured(queue: Path, cleanup: Cleanup, kind: str, notifies: list[str],
                            reported: list[str]) -> None:
    rcpts = [qfile.Recipient(f"r{i}@example.net", notify=n) for i, n in enumerate(notifies)]
    action = {"failure": "failed", "delay": "delayed", "success": "delivered"}[kind]
    dsn_code = {"failure": "5.0.0", "delay": "4.0.0", "success": "2.0.0"}[kind]
    log = [qfile.LogEntry(i, action, dsn_code, "because") for i in range(len(rcpts))]
    queue_id = place(queue, rcpts=rcpts, log=log)
    result = notice.handle(BounceRequest(queue_id, "deferred", kind, list(range(len(rcpts)))), SETTINGS)
    assert result.status == "ok"
    if not reported:
        assert result.queue_id == ""
        assert notices(queue) == {}
        return
    _env, msg = notices(queue)[result.queue_id]
    blocks = status_blocks(msg)[1:]
    assert [b["Final-Recipient"].split("; ")[1] for b in blocks] == reported
    assert {b["Action"] for b in blocks} == {action}


def test_qmgr_warned_markers_are_not_reasons(queue: Path, cleanup: Cleanup) -> None:
    log = [qfile.LogEntry(0, "delayed", "4.4.1", "connection refused"),
           qfile.LogEntry(0, "warned", "4.0.0", "delay warning sent")]
    queue_id = place(queue, log=log)
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    block = status_blocks(notices(queue)[result.queue_id][1])[1]
    assert (block["Status"], block["Diagnostic-Code"]) == ("5.4.1", "x-unix; connection refused")


def test_only_requested_indexes_are_reported(queue: Path, cleanup: Cleanup) -> None:
    rcpts = [qfile.Recipient("a@example.net"), qfile.Recipient("b@example.net"),
             qfile.Recipient("c@example.net")]
    log = [qfile.LogEntry(i, "failed", "5.0.0", f"reason {i}") for i in range(3)]
    queue_id = place(queue, rcpts=rcpts, log=log)
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [2, 0, 2]), SETTINGS)
    blocks = status_blocks(notices(queue)[result.queue_id][1])[1:]
    assert [b["Diagnostic-Code"] for b in blocks] == ["x-unix; reason 2", "x-unix; reason 0"]


@pytest.mark.parametrize(("request_", "text"), [
    (BounceRequest("NOSUCHIDzz1", "deferred", "failure", [0]), "bad queue ID"),
    (BounceRequest("../../etc/passwd", "deferred", "failure", [0]), "bad queue ID"),
    (BounceRequest("0000000000z1", "private", "failure", [0]), "bad queue name"),
    (BounceRequest("0000000000z1", "deferred", "explode", [0]), "unknown notice kind"),
    (BounceRequest("0000000000z1", "deferred", "failure", [0]), "not found"),
])
def test_bad_requests_are_temporary_failures(queue: Path, cleanup: Cleanup, request_: BounceRequest,
                                             text: str) -> None:
    result = notice.handle(request_, SETTINGS)
    assert result.status == "temp"
    assert text in result.text


def test_bad_index_and_corrupt_file(queue: Path, cleanup: Cleanup) -> None:
    queue_id = place(queue)
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [5]), SETTINGS)
    assert (result.status, "no recipient #5" in result.text) == ("temp", True)
    bad = new_queue_id()
    (queue / "deferred" / bad).write_bytes(b"not a queue file\n")
    result = notice.handle(BounceRequest(bad, "deferred", "failure", [0]), SETTINGS)
    assert result.status == "temp" and "corrupt" in result.text
    assert notices(queue) == {}


def test_cleanup_down_or_refusing_is_temporary(queue: Path) -> None:
    queue_id = place(queue)
    result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    assert result.status == "temp" and "cleanup" in result.text
    server = Cleanup(reply="perm")
    try:
        result = notice.handle(BounceRequest(queue_id, "deferred", "failure", [0]), SETTINGS)
    finally:
        server.stop()
    assert result.status == "temp"
    assert "5.3.4" in result.text


def test_service_serves_requests_until_eof(queue: Path, cleanup: Cleanup) -> None:
    first, second = place(queue), place(queue, where="active")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(serve_bounce(theirs, SETTINGS)))
        thread.start()
        ours.settimeout(10)
        codec.send(ours, BounceRequest(first, "deferred", "failure", [0]))
        one = codec.expect(codec.recv(ours), BounceResult)
        codec.send(ours, BounceRequest(second, "active", "delay", [0]))
        two = codec.expect(codec.recv(ours), BounceResult)
        ours.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert done == [2]
    assert one.status == two.status == "ok"
    assert sorted(notices(queue)) == sorted([one.queue_id, two.queue_id])
    assert notices(queue)[two.queue_id][1]["Subject"] == "Delayed Mail (still being retried)"
    assert f"{second}: sender delay notification: {two.queue_id}" in log_text(queue)


def test_service_stops_on_a_wrong_message(queue: Path) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        codec.send(ours, BounceResult("ok"))
        assert serve_bounce(theirs, SETTINGS) == 0
    assert "expected bounce_request" in log_text(queue)
