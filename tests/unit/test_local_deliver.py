"""A whole delivery request through LocalAgent (postpy.local.deliver) and the
service loop (postpy.local.service), with a stand-in for cleanup."""

from __future__ import annotations

import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from test_local_support import (  # noqa: F401  (the *_fixture names are fixtures)
    IS_ROOT,
    FakeUsers,
    acting_uid,
    base_fixture,
    build_aliases,
    maillog_fixture,
    make_settings,
    users_fixture,
)

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult, Rcpt
from postpy.local.deliver import LocalAgent
from postpy.local.outcome import DeliveryError
from postpy.queue import qfile, qid
from postpy.server.requests import serve_delivery_requests
from postpy.util.privs import Identity

BODY = b"Subject: hello\nTo: someone\n\nFrom the start\nbody\n"


class FakeCleanup:
    def __init__(self, fail: DeliveryError | None = None) -> None:
        self.calls: list[tuple[str, list[Rcpt], dict[str, str], bytes]] = []
        self.fail = fail

    def __call__(self, sender: str, rcpts: list[Rcpt], attrs: dict[str, str], content: bytes) -> str:
        if self.fail:
            raise self.fail
        self.calls.append((sender, rcpts, attrs, content))
        return f"NEW{len(self.calls)}"


@pytest.fixture
def queue(base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = base / "spool"
    (path / "active").mkdir(parents=True)
    monkeypatch.chdir(path)
    mail = base / "mail"
    mail.mkdir()
    os.chmod(mail, 0o1777)
    return path


def enqueue(queue: Path, recipients: list[str], body: bytes = BODY,
            sender: str = "sender@remote.example", attrs: dict[str, str] | None = None) -> str:
    queue_id = qid.new_queue_id()
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in recipients], arrival=time.time(),
                         attrs=attrs or {})
    qfile.write_queue_file(str(queue / "active"), queue_id, env, body, durable=False)
    return queue_id


def request(queue_id: str, recipients: list[str], **kwargs: object) -> DeliveryRequest:
    now = time.time()
    rcpts = [DeliveryRcpt(i, r) for i, r in enumerate(recipients)]
    return DeliveryRequest(queue_id, "active", "sender@remote.example", "test.example", rcpts,
                           arrival=now, active_time=now, dispatch_time=now, transport="local",
                           **kwargs)  # type: ignore[arg-type]


def results(result: DeliveryResult) -> list[tuple[int, str, str, str]]:
    return [(r.index, r.status, r.dsn, r.text) for r in result.results]


def deliver(settings, queue: Path, recipients: list[str], submit: FakeCleanup | None = None,
            **enqueue_args: object) -> tuple[str, DeliveryResult]:
    queue_id = enqueue(queue, recipients, **enqueue_args)  # type: ignore[arg-type]
    agent = LocalAgent(settings, submit or FakeCleanup())
    return queue_id, agent.deliver(request(queue_id, recipients))


def test_mailbox_delivery_and_log(base: Path, users: FakeUsers, queue: Path,
                                  maillog_path: Path) -> None:
    settings = make_settings(base, users)
    queue_id, result = deliver(settings, queue, ["alice@test.example"])
    assert results(result) == [(0, "sent", "2.0.0", "delivered to mailbox")]
    assert all(r.relay == "local" for r in result.results)
    mbox = (base / "mail" / "alice").read_bytes()
    assert re.match(rb"From sender@remote\.example \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                    rb"Return-Path: <sender@remote\.example>\n"
                    rb"Delivered-To: alice@test\.example\n"
                    rb"Subject: hello\nTo: someone\n\n>From the start\nbody\n\n\Z", mbox)
    assert os.stat(base / "mail" / "alice").st_uid == acting_uid()[0]
    assert re.search(rf"postpy/local\[\d+\]: {queue_id}: to=<alice@test\.example>, relay=local, "
                     r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
                     r"status=sent \(delivered to mailbox\)", maillog_path.read_text())


def test_maildir_delivery(base: Path, users: FakeUsers, queue: Path, maillog_path: Path) -> None:
    settings = make_settings(base, users, home_mailbox="Maildir/")
    _, result = deliver(settings, queue, ["alice@test.example"])
    assert results(result) == [(0, "sent", "2.0.0", "delivered to maildir")]
    new = Path(users.users["alice"].home) / "Maildir" / "new"
    (name,) = os.listdir(new)
    assert (new / name).read_bytes() == (b"Return-Path: <sender@remote.example>\n"
                                         b"Delivered-To: alice@test.example\n" + BODY)


def test_unknown_user_bounces(base: Path, users: FakeUsers, queue: Path,
                              maillog_path: Path) -> None:
    settings = make_settings(base, users)
    queue_id, result = deliver(settings, queue, ["nosuch@test.example"])
    assert results(result) == [(0, "bounced", "5.1.1", 'unknown user: "nosuch"')]
    assert (f'{queue_id}: to=<nosuch@test.example>, relay=local' in maillog_path.read_text())
    assert 'status=bounced (unknown user: "nosuch")' in maillog_path.read_text()


def test_alias_to_pipe_runs_as_default_privs(base: Path, users: FakeUsers, queue: Path,
                                             maillog_path: Path) -> None:
    out = base / "shared" / "pipe"
    spec = build_aliases(base, f'robot: "|id -u > {out}.uid; env > {out}.env; cat > {out}.msg"\n')
    settings = make_settings(base, users, alias_maps=spec)
    queue_id, result = deliver(settings, queue, ["robot@test.example"])
    cmd = f"id -u > {out}.uid; env > {out}.env; cat > {out}.msg"
    assert results(result) == [(0, "sent", "2.0.0", f"delivered to command: {cmd}")]
    uid = int(Path(f"{out}.uid").read_text())
    assert uid == (acting_uid()[0] if IS_ROOT else os.getuid())
    env = Path(f"{out}.env").read_text()
    assert "RECIPIENT=robot@test.example\n" in env and "SENDER=sender@remote.example\n" in env
    msg = Path(f"{out}.msg").read_bytes()
    assert msg.startswith(b"From sender@remote.example ")
    assert msg.split(b"\n", 1)[1] == (b"Return-Path: <sender@remote.example>\n"
                                      b"Delivered-To: robot@test.example\n" + BODY)
    assert f"status=sent (delivered to command: {cmd})" in maillog_path.read_text()


@pytest.mark.parametrize("command, expected", [
    ("echo busy; exit 75", ("deferred", "4.3.0", "temporary failure. Command output: busy")),
    ("echo no such mailbox; exit 67", ("bounced", "5.1.1", "user unknown. Command output: no such mailbox")),
])
def test_pipe_exit_status(base: Path, users: FakeUsers, queue: Path, maillog_path: Path,
                          command: str, expected: tuple[str, str, str]) -> None:
    spec = build_aliases(base, f'robot: "|{command}"\n')
    settings = make_settings(base, users, alias_maps=spec)
    _, result = deliver(settings, queue, ["robot@test.example"])
    assert results(result) == [(0, *expected)]


def test_forwarding_resubmits_one_message(base: Path, users: FakeUsers, queue: Path,
                                          maillog_path: Path) -> None:
    spec = build_aliases(base, "team: alice, x@remote.example, y@remote.example\n")
    settings = make_settings(base, users, alias_maps=spec)
    cleanup = FakeCleanup()
    queue_id, result = deliver(settings, queue, ["team@test.example"], submit=cleanup,
                               attrs={"envid": "ENV1", "client_addr": "192.0.2.1"})
    assert results(result) == [(0, "sent", "2.0.0", "delivered to 2 destinations")]
    ((sender, rcpts, attrs, content),) = cleanup.calls
    assert sender == "sender@remote.example"
    assert [(r.address, r.orcpt) for r in rcpts] == [
        ("x@remote.example", "rfc822;team@test.example"),
        ("y@remote.example", "rfc822;team@test.example")]
    assert attrs == {"origin": "local", "envid": "ENV1"}
    assert content == b"Delivered-To: team@test.example\n" + BODY
    log = maillog_path.read_text()
    assert f"{queue_id}: to=<x@remote.example>, orig_to=<team@test.example>, relay=local" in log
    assert "status=sent (forwarded as NEW1)" in log
    assert (base / "mail" / "alice").exists()


def test_no_forwarding_when_something_deferred(base: Path, users: FakeUsers, queue: Path,
                                               maillog_path: Path) -> None:
    spec = build_aliases(base, 'team: "|exit 75", x@remote.example\n')
    settings = make_settings(base, users, alias_maps=spec)
    cleanup = FakeCleanup()
    _, result = deliver(settings, queue, ["team@test.example"], submit=cleanup)
    assert results(result)[0][1:3] == ("deferred", "4.3.0")
    assert cleanup.calls == []


def test_forwarding_failure(base: Path, users: FakeUsers, queue: Path, maillog_path: Path) -> None:
    spec = build_aliases(base, "fw: x@remote.example\n")
    settings = make_settings(base, users, alias_maps=spec)
    cleanup = FakeCleanup(fail=DeliveryError("4.3.0", "cannot forward: cleanup is down"))
    _, result = deliver(settings, queue, ["fw@test.example"], submit=cleanup)
    assert results(result) == [(0, "deferred", "4.3.0", "cannot forward: cleanup is down")]


def test_delivered_to_loop_bounces(base: Path, users: FakeUsers, queue: Path,
                                   maillog_path: Path) -> None:
    settings = make_settings(base, users)
    body = b"Delivered-To: ALICE@test.example\n" + BODY
    _, result = deliver(settings, queue, ["alice@test.example"], body=body)
    assert results(result) == [(0, "bounced", "5.4.6",
                                "mail forwarding loop for alice@test.example")]
    assert not (base / "mail" / "alice").exists()


def test_duplicates_across_recipients(base: Path, users: FakeUsers, queue: Path,
                                      maillog_path: Path) -> None:
    spec = build_aliases(base, "a1: alice\na2: alice\n")
    settings = make_settings(base, users, alias_maps=spec)
    _, result = deliver(settings, queue, ["a1@test.example", "a2@test.example",
                                          "alice@test.example"])
    assert [r[1] for r in results(result)] == ["sent"] * 3
    assert (base / "mail" / "alice").read_bytes().count(b"\nFrom ") == 0
    assert (base / "mail" / "alice").read_bytes().count(b"From sender") == 1


def test_mailbox_command(base: Path, users: FakeUsers, queue: Path, maillog_path: Path) -> None:
    out = base / "shared" / "mda"
    settings = make_settings(base, users, mailbox_command=f'echo "$EXTENSION" > {out}; cat >> {out}',
                             recipient_delimiter="+")
    _, result = deliver(settings, queue, ["alice+box@test.example"])
    assert results(result)[0][1] == "sent"
    assert results(result)[0][3].startswith("delivered to command: echo ")
    assert out.read_bytes().startswith(b"box\nFrom sender@remote.example ")


def test_size_limit(base: Path, users: FakeUsers, queue: Path, maillog_path: Path) -> None:
    settings = make_settings(base, users, mailbox_size_limit="100")
    _, result = deliver(settings, queue, ["alice@test.example"], body=BODY + b"x" * 200 + b"\n")
    ((_, status, dsn, text),) = results(result)
    assert (status, dsn) == ("bounced", "5.2.2")
    assert text.startswith(f"cannot update mailbox {base}/mail/alice for user alice. ")


def test_bad_or_missing_queue_file_defers(base: Path, users: FakeUsers, queue: Path,
                                          maillog_path: Path) -> None:
    agent = LocalAgent(make_settings(base, users), FakeCleanup())
    result = agent.deliver(request("../../etc", ["alice@test.example"]))
    assert results(result)[0][1:3] == ("deferred", "4.3.0")
    missing = agent.deliver(request(qid.new_queue_id(), ["alice@test.example"]))
    assert results(missing)[0][1:3] == ("deferred", "4.3.0")
    assert "cannot read queue file" in results(missing)[0][3]


def test_service_loop_answers_many_requests(base: Path, users: FakeUsers, queue: Path,
                                            maillog_path: Path) -> None:
    agent = LocalAgent(make_settings(base, users), FakeCleanup())
    first, second = enqueue(queue, ["alice@test.example"]), enqueue(queue, ["nosuch@test.example"])
    ours, theirs = socket.socketpair()
    served: list[int] = []
    thread = threading.Thread(target=lambda: served.append(serve_delivery_requests(agent.deliver, theirs)))
    thread.start()
    try:
        ours.settimeout(20)
        codec.send(ours, request(first, ["alice@test.example"]))
        one = codec.expect(codec.recv(ours), DeliveryResult)
        codec.send(ours, request(second, ["nosuch@test.example"]))
        two = codec.expect(codec.recv(ours), DeliveryResult)
    finally:
        ours.close()
        thread.join(20)
        theirs.close()
    assert (one.queue_id, results(one)[0][1]) == (first, "sent")
    assert (two.queue_id, results(two)[0][1]) == (second, "bounced")
    assert served == [2]


# -- root's own mailbox --------------------------------------------------------------

def add_root(base: Path, users: FakeUsers) -> Path:
    """root, with a home under the test directory (never the host's /root)."""
    home = base / "home" / "root"
    home.mkdir(parents=True)
    os.chmod(home, 0o700)
    users.users["root"] = Identity("root", 0, 0, str(home), "/bin/sh")
    return home


@pytest.mark.skipif(not IS_ROOT, reason="needs root: root's mailbox is written as root")
@pytest.mark.parametrize("layout", ["spool mbox", "existing mbox", "home Maildir", "spool Maildir"])
def test_roots_mailbox_is_delivered_as_root(base: Path, users: FakeUsers, queue: Path,
                                            maillog_path: Path, layout: str) -> None:
    home = add_root(base, users)
    spool = base / "mail"
    params = {"home_mailbox": "Maildir/"} if layout == "home Maildir" else \
        {"mail_spool_directory": f"{spool}/"} if layout == "spool Maildir" else {}
    if layout == "existing mbox":               # left by the MTA this one replaced
        (spool / "root").write_bytes(b"From old\n\n")
        os.chmod(spool / "root", 0o600)
    settings = make_settings(base, users, **params)
    _, result = deliver(settings, queue, ["root@test.example"])
    kind = "maildir" if "Maildir" in layout else "mailbox"
    assert results(result) == [(0, "sent", "2.0.0", f"delivered to {kind}")]
    if kind == "mailbox":
        st = os.stat(spool / "root")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
        assert (spool / "root").read_bytes().count(b"\nDelivered-To: root@test.example\n") == 1
    else:
        box = home / "Maildir" if layout == "home Maildir" else spool / "root"
        (name,) = os.listdir(box / "new")
        for path in (box, box / "new", box / "new" / name):
            assert os.stat(path).st_uid == 0
        assert (box / "new" / name).read_bytes().endswith(BODY)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: commands for root run as default_privs")
def test_roots_mailbox_command_runs_as_default_privs(base: Path, users: FakeUsers, queue: Path,
                                                     maillog_path: Path) -> None:
    add_root(base, users)
    out = base / "shared" / "uid"
    settings = make_settings(base, users, mailbox_command=f"id -u > {out}")
    _, result = deliver(settings, queue, ["root@test.example"])
    assert results(result)[0][1] == "sent"
    assert int(out.read_text()) == acting_uid()[0] != 0
