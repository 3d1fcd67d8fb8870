"""showq's service function on a socketpair, and the authorized_*_users lists."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from postpy.config.maincf import load_config
from postpy.ipc import codec
from postpy.ipc.messages import ShowqReply, ShowqRequest
from postpy.mail import queue_listing as ql
from postpy.mail.authorized import AccessError, uid_allowed, user_allowed
from postpy.queue import qfile
from postpy.showq import service

NOBODY = 65534


def queue_tree(root: Path, count: int = 2) -> None:
    for name in ("maildrop", "incoming", "active", "deferred", "hold"):
        (root / name).mkdir()
    for i in range(count):
        env = qfile.Envelope("a@x", [qfile.Recipient(f"r{i}@y")], arrival=1000.0 + i)
        qfile.write_queue_file(str(root / "deferred"), f"QID{i:04d}", env, b"SECRET BODY\n",
                               durable=False)


def converse(tmp_path: Path, request: object, main_cf: str = "") -> tuple[object, bytes, bool]:
    """Run serve() against a client on a socketpair: (reply, data, ended with E)."""
    (tmp_path / "main.cf").write_text(main_cf)
    ctx = SimpleNamespace(cfg=load_config(str(tmp_path)))
    server, client = socket.socketpair()

    def serve_and_close() -> None:     # as the skeleton does after the handler
        try:
            service.serve(ctx, server)  # type: ignore[arg-type]
        finally:
            server.close()

    thread = threading.Thread(target=serve_and_close, daemon=True)
    thread.start()
    client.settimeout(10)
    with client:
        client.sendall(codec.encode(request))
        reply = codec.recv(client, "showq")
        data = b""
        ended = False
        try:
            while True:
                kind, payload = codec.recv_frame(client, "showq")
                if kind == codec.END:
                    ended = True
                    break
                data += payload
        except EOFError:
            pass
    thread.join(10)
    return reply, data, ended


def test_lists_the_queue_as_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_tree(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    reply, data, ended = converse(tmp_path, ShowqRequest("json"))
    assert reply == ShowqReply("ok") and ended
    lines = data.decode().splitlines()
    assert [ql.from_json(line).queue_id for line in lines] == ["QID0000", "QID0001", "QID0002"]
    assert b"SECRET" not in data                     # never any content


def test_large_listing_is_sent_in_several_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_tree(tmp_path, 700)
    monkeypatch.chdir(tmp_path)
    reply, data, ended = converse(tmp_path, ShowqRequest("json"))
    assert ended and len(data.splitlines()) == 700 and len(data) > service.BATCH


def test_unknown_format_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    reply, data, _ended = converse(tmp_path, ShowqRequest("xml"))
    assert isinstance(reply, ShowqReply) and reply.status == "error" and data == b""


def test_peer_uid_is_the_kernels_word() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert service.peer_uid(a) == os.getuid()


def test_authorize() -> None:
    assert service.authorize(["static:anyone"], NOBODY).status == "ok"
    assert service.authorize(["nobody"], NOBODY).status == "ok"
    denied = service.authorize(["root"], NOBODY)
    assert denied.status == "denied" and f"({NOBODY}) is not allowed to view the mail queue" in denied.text
    assert service.authorize(["root"], os.geteuid()).status == "ok"      # showq's own uid
    assert service.authorize([], 0).status == "ok"                       # root always
    assert service.authorize(["/nonexistent/list"], NOBODY).status == "error"


@pytest.mark.parametrize("elements, name, allowed", [
    (["static:anyone"], "alice", True),
    (["static:anyone"], None, True),
    (["alice", "bob"], "bob", True),
    (["alice", "bob"], "BOB", True),
    (["alice"], "carol", False),
    ([], "alice", False),
    (["!alice", "static:anyone"], "alice", False),
    (["!alice", "static:anyone"], "bob", True),
    (["alice"], None, False),
    (["inline:{alice=yes}"], "alice", True),
    (["inline:{alice=yes}"], "bob", False),
    (["!inline:{alice=1}", "static:anyone"], "alice", False),
])
def test_user_allowed(elements: list[str], name: str | None, allowed: bool) -> None:
    assert user_allowed(elements, name) is allowed


def test_user_list_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# who may\nalice, bob\n  carol\n")
    assert user_allowed([str(path)], "carol")
    assert not user_allowed([str(path)], "dave")
    assert user_allowed([f"!{path}", "static:anyone"], "dave")
    assert not user_allowed([f"!{path}", "static:anyone"], "alice")


def test_unreadable_list_is_an_error() -> None:
    with pytest.raises(AccessError):
        user_allowed(["/nonexistent/list"], "alice")
    with pytest.raises(AccessError):
        user_allowed(["bogus:table"], "alice")


def test_uid_allowed_privileged_and_unknown() -> None:
    assert uid_allowed(["nobody-at-all"], 12345, privileged=(0, 12345))
    assert not uid_allowed(["root"], 2_000_000_000)      # no passwd entry
    assert uid_allowed(["static:anyone"], 2_000_000_000)
