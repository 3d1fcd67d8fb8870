"""cleanup's conversation, driven over real sockets against a real queue directory."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.cleanup.client import CleanupClient
from postpy.cleanup.headers import HeaderSettings
from postpy.cleanup.service import remove_stale_temp_files
from postpy.cleanup.session import CleanupSettings, Session, serve
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, CleanupHello, CleanupResult, Rcpt
from postpy.queue import qfile, qid
from postpy.queue.qid import pid_of
from postpy.util import maillog

HEADERS = HeaderSettings(myhostname="mx.test.example", myorigin="test.example", hopcount_limit=5)


class Queue:
    """A queue directory with incoming/ and a log file."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.incoming = base / "incoming"
        self.incoming.mkdir()
        self.log_path = base / "maillog"
        maillog.setup("cleanup", maillog_file=str(self.log_path), hostname="mx")

    def settings(self, **kw: object) -> CleanupSettings:
        base = dict(headers=HEADERS, incoming=str(self.incoming),
                    qmgr_trigger=str(self.base / "no-qmgr"), timeout=10.0)
        base.update(kw)
        return CleanupSettings(**base)  # type: ignore[arg-type]

    def files(self) -> list[str]:
        return sorted(os.listdir(self.incoming))

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path)


def converse(settings: CleanupSettings, env: CleanupEnvelope, chunks: list[bytes], *,
             end: bool = True) -> tuple[str, CleanupResult | None, CleanupResult | None]:
    """Run one Session on a socketpair; (hello id, result seen by client, session's result)."""
    client, server = socket.socketpair()
    client.settimeout(10)
    box: dict[str, CleanupResult | None] = {}
    thread = threading.Thread(target=lambda: box.update(r=Session(server, settings).run()))
    thread.start()
    try:
        hello = codec.expect(codec.recv(client), CleanupHello)
        codec.send(client, env)
        for chunk in chunks:
            client.sendall(codec.encode_data(chunk))
        seen = None
        if end:
            client.sendall(codec.encode_end())
            seen = codec.expect(codec.recv(client), CleanupResult)
        else:
            client.close()
    finally:
        thread.join(10)
        assert not thread.is_alive()
        client.close()
        server.close()
    return hello.queue_id, seen, box["r"]


def smtp_env(*rcpts: str, **attrs: str) -> CleanupEnvelope:
    attrs = {"origin": "smtpd", "client_addr": "192.0.2.5", "client_name": "c.example",
             "helo": "c.example", "protocol": "ESMTP", **attrs}
    return CleanupEnvelope("alice@example.org", [Rcpt(r) for r in rcpts or ("bob@test.example",)], attrs)


def test_message_is_queued_durably_with_received_header(queue):
    content = [b"Subject: hello\nMessage-ID: <m1@example.org>\n", b"\nline 1\n", b"line 2\n"]
    queue_id, result, _ = converse(queue.settings(), smtp_env(), content)
    assert result is not None and result.status == "ok" and result.queue_id == queue_id
    assert result.size == sum(map(len, content))
    assert queue.files() == [queue_id]
    path = queue.incoming / queue_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env, data = qfile.read_all(str(path))
    assert env.sender == "alice@example.org"
    assert [r.address for r in env.recipients] == ["bob@test.example"]
    assert env.attrs["client_addr"] == "192.0.2.5" and env.attrs["helo"] == "c.example"
    assert data.startswith(b"Received: from c.example (c.example [192.0.2.5])\n")
    assert f"with ESMTP id {queue_id}\n\tfor <bob@test.example>; ".encode() in data
    assert data.endswith(b"Subject: hello\nMessage-ID: <m1@example.org>\n\nline 1\nline 2\n")
    assert f"{queue_id}: message-id=<m1@example.org>" in queue.log()


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 65536])
def test_body_is_stored_byte_for_byte(queue, chunk_size):
    body = bytes(range(256)) * 40 + b"\n.\n..\n" + b"x" * 10000 + b"\n\xff\xfe 8-bit\n"
    content = b"Subject: bytes\n\n" + body
    chunks = [content[i:i + chunk_size] for i in range(0, len(content), chunk_size)]
    queue_id, result, _ = converse(queue.settings(), smtp_env(), chunks)
    assert result is not None and result.status == "ok"
    _, data = qfile.read_all(str(queue.incoming / queue_id))
    assert data.split(b"\n\n", 1)[1] == body


def test_large_message_streams(queue):
    chunk = (b"y" * 1023 + b"\n") * 64
    chunks = [b"Subject: big\n\n"] + [chunk] * 160          # about 10 MB
    queue_id, result, _ = converse(queue.settings(message_size_limit=0), smtp_env(), chunks)
    assert result is not None and result.status == "ok"
    env = qfile.read_envelope(str(queue.incoming / queue_id))
    assert env.content_length > 10_000_000


def test_message_size_limit(queue):
    chunks = [b"Subject: big\n\n", b"z" * 600, b"z" * 600]
    _, result, _ = converse(queue.settings(message_size_limit=1000), smtp_env(), chunks)
    assert result is not None
    assert (result.status, result.reply) == ("perm", "5.3.4 Message size exceeds fixed limit")
    assert queue.files() == []


def test_disconnect_before_end_queues_nothing(queue):
    queue_id, _, returned = converse(queue.settings(), smtp_env(),
                                     [b"Subject: x\n\n", b"partial body\n" * 1000], end=False)
    assert returned is None
    assert queue.files() == []
    assert f"{queue_id}: lost connection" in queue.log()


def test_disconnect_during_headers_queues_nothing(queue):
    _, _, returned = converse(queue.settings(), smtp_env(), [b"Subject: x\nTo: y"], end=False)
    assert returned is None
    assert queue.files() == []


def test_too_many_hops(queue):
    content = [b"Received: a\n" * 5 + b"Subject: loop\n\nbody\n"]
    _, result, _ = converse(queue.settings(), smtp_env(), content)
    assert result is not None and (result.status, result.reply) == ("perm", "5.4.6 Too many hops")
    assert queue.files() == []


def test_extract_recipients_end_to_end(queue):
    env = CleanupEnvelope("alice", [], {"origin": "pickup", "uid": "1000", "extract": "yes",
                                        "rewrite": "yes"})
    content = [b"To: bob\nBcc: carol@example.net\nSubject: t\n\nhi\n"]
    queue_id, result, _ = converse(queue.settings(), env, content)
    assert result is not None and result.status == "ok", result
    qenv, data = qfile.read_all(str(queue.incoming / queue_id))
    assert [(r.address, r.orig) for r in qenv.recipients] == [
        ("bob@test.example", "bob"), ("carol@example.net", "")]
    assert qenv.sender == "alice@test.example"
    assert b"carol" not in data and b"Bcc" not in data
    assert b"To: bob@test.example\n" in data
    assert "extract" not in qenv.attrs and "rewrite" not in qenv.attrs
    assert qenv.attrs["uid"] == "1000"


def test_extract_keeps_literals_and_qualifies_commented_headers(queue):
    env = CleanupEnvelope("root", [], {"origin": "pickup", "uid": "0", "extract": "yes",
                                       "rewrite": "yes"})
    content = [b"From: root (Cron Daemon)\nTo: bench3, b@[127.0.0.2]\nSubject: t\n\nhi\n"]
    queue_id, result, _ = converse(queue.settings(), env, content)
    assert result is not None and result.status == "ok", result
    qenv, data = qfile.read_all(str(queue.incoming / queue_id))
    assert [r.address for r in qenv.recipients] == ["bench3@test.example", "b@[127.0.0.2]"]
    assert b"From: root@test.example (Cron Daemon)\n" in data
    assert b"To: bench3@test.example, b@[127.0.0.2]\n" in data


def test_unparsable_recipient_header_is_returned_to_the_local_sender(queue):
    env = CleanupEnvelope("alice", [Rcpt("arg@example.net")],
                          {"origin": "pickup", "extract": "yes"})
    queue_id, result, _ = converse(queue.settings(), env, [b"To: a@x, b@[1.2.3]\n\nhi\n"])
    assert result is not None and result.status == "ok", result
    assert "returned: 5.1.3 Bad recipient address syntax in header To" in result.reply
    qenv, _ = qfile.read_all(str(queue.incoming / queue_id))
    assert [r.status for r in qenv.recipients] == [qfile.BOUNCED]


@pytest.mark.parametrize(("setting", "myorigin"), [("yes", "origin.example"), ("no", "")])
def test_append_at_myorigin_setting(setting, myorigin):
    from postpy.config.maincf import Config

    cfg = Config("/cfg", explicit={"myhostname": "mx.example", "myorigin": "origin.example",
                                   "append_at_myorigin": setting})
    assert CleanupSettings.from_config(cfg).headers.myorigin == myorigin


def test_extract_without_recipients_is_refused(queue):
    env = CleanupEnvelope("alice", [], {"origin": "pickup", "extract": "yes"})
    _, result, _ = converse(queue.settings(), env, [b"Subject: nobody\n\n"])
    assert result is not None and result.status == "perm"
    assert result.reply == "5.1.3 No recipient addresses found in message header"
    assert queue.files() == []


@pytest.mark.parametrize(("content", "stored_tail"), [
    ([b"Subject: x\n\nno final newline"], b"Subject: x\n\nno final newline\n"),
    ([b"Subject: only headers"], b"Subject: only headers\n"),
    ([], b"for <bob@test.example>; "),
    ([b"not a header\nSubject: x\n"], b"\n\nnot a header\nSubject: x\n"),
])
def test_content_shapes(queue, content, stored_tail):
    queue_id, result, _ = converse(queue.settings(), smtp_env(), content)
    assert result is not None and result.status == "ok"
    _, data = qfile.read_all(str(queue.incoming / queue_id))
    assert data.endswith(b"\n")
    assert stored_tail in data
    if content == [b"Subject: only headers"]:
        assert b"\n\n" not in data


@pytest.mark.parametrize("err, reply", [
    (28, "4.3.1 Insufficient system storage"),          # ENOSPC: the disk is full
    (5, "4.3.0 Error: queue file write error"),         # EIO: anything else
])
def test_write_error_is_temporary_and_leaves_nothing(queue, monkeypatch, err, reply):
    real_write = qfile.QueueFileWriter.write
    calls = {"n": 0}

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(err, os.strerror(err))
        real_write(self, data)

    monkeypatch.setattr(qfile.QueueFileWriter, "write", failing_write)
    _, result, _ = converse(queue.settings(), smtp_env(), [b"Subject: x\n\n", b"a\n", b"b\n"])
    assert result is not None
    assert (result.status, result.reply) == ("temp", reply)
    assert queue.files() == []
    assert f"queue file write error: {os.strerror(err)}" in queue.log()


def test_missing_incoming_directory_is_temporary(queue):
    settings = queue.settings(incoming=str(queue.base / "nonexistent"))
    _, result, _ = converse(settings, smtp_env(), [b"Subject: x\n\n"])
    assert result is not None and result.status == "temp"


def test_queue_minfree(queue):
    _, result, _ = converse(queue.settings(queue_minfree=1 << 62), smtp_env(), [b"Subject: x\n\n"])
    assert result is not None
    assert (result.status, result.reply) == ("temp", "4.3.1 Insufficient system storage")
    assert queue.files() == []


def test_oversized_frame_ends_the_conversation(queue):
    settings = queue.settings(max_frame=4096)
    _, _, returned = converse(settings, smtp_env(), [b"Subject: x\n\n" + b"a" * 5000], end=False)
    assert returned is None
    assert queue.files() == []


def test_unknown_attribute_is_refused_temporarily(queue):
    env = smtp_env(bogus="1")
    _, result, _ = converse(queue.settings(), env, [b"Subject: x\n\n"])
    assert result is not None and result.status == "temp"
    assert queue.files() == []


# -- the blocking client against a real unix socket server -----------------------------

class CleanupServer:
    """serve() on a unix socket in a thread: a cleanup without master."""

    def __init__(self, settings: CleanupSettings) -> None:
        self.dir = tempfile.mkdtemp(prefix="pp-cl-", dir="/tmp")
        self.path = os.path.join(self.dir, "cleanup")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.settings = settings
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.setblocking(True)
                serve(conn, self.settings)

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def cleanup_server(queue: Queue) -> Iterator[CleanupServer]:
    server = CleanupServer(queue.settings())
    yield server
    server.close()


def test_client_submits_through_real_socket(queue, cleanup_server):
    with CleanupClient(cleanup_server.path, timeout=10) as client:
        assert qid.is_queue_id(client.queue_id)
        big = b"w" * 200_000 + b"\n"
        result = client.submit("a@b", [Rcpt("c@d")], {"origin": "local"}, [b"Subject: s\n\n", big])
    assert result.status == "ok"
    _, data = qfile.read_all(str(queue.incoming / result.queue_id))
    assert data.endswith(big)


def test_client_error_in_content_leaves_nothing(queue, cleanup_server):
    def content():
        yield b"Subject: s\n\n"
        raise RuntimeError("reader broke")

    with CleanupClient(cleanup_server.path, timeout=10) as client, pytest.raises(RuntimeError):
        client.submit("a@b", [Rcpt("c@d")], {}, content())
    deadline = time.monotonic() + 10
    while "lost connection" not in queue.log():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert queue.files() == []


# -- leftovers of a kill -9 ---------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed(queue):
    live = qid.new_queue_id()
    assert pid_of(live) == os.getpid()
    dead = live.split("z")[0] + "z" + qid._encode(dead_pid())
    old_live = qid.new_queue_id()
    for name in (live, dead, old_live):
        (queue.incoming / f".{name}.tmp").write_bytes(b"partial")
    (queue.incoming / ".junk.tmp").write_bytes(b"?")
    (queue.incoming / live.replace("z", "zz")).write_bytes(b"finished file, not ours to touch")
    old = time.time() - 7200
    os.utime(queue.incoming / f".{old_live}.tmp", (old, old))
    os.utime(queue.incoming / ".junk.tmp", (old, old))
    removed = remove_stale_temp_files(str(queue.incoming), max_age=3600)
    assert sorted(removed) == sorted([f".{dead}.tmp", f".{old_live}.tmp", ".junk.tmp"])
    assert sorted(queue.files()) == sorted([f".{live}.tmp", live.replace("z", "zz")])
