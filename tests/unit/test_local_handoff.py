"""local's mailbox_transport and fallback_transport: the plan (postpy.local.resolve)
and the hand-over to another delivery agent (postpy.local.handoff), with a
stand-in agent on private/<transport>; and the smtp/lmtp agent taking the
handed-over address (postpy.smtp.message)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_local_support import (  # noqa: F401  (the *_fixture names are fixtures)
    FakeUsers,
    base_fixture,
    build_aliases,
    maillog_fixture,
    make_settings,
    users_fixture,
)

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult, RecipientResult
from postpy.local.deliver import LocalAgent
from postpy.local.resolve import FORWARD, MAILBOX, TRANSPORT, Resolver
from postpy.queue import qfile, qid
from postpy.smtp.message import load_message

LMTP = "lmtp:unix:private/dovecot-lmtp"
ALIASES = "info: alice\nteam: alice, bob@remote.example\nghost: nosuch\n"


def plan(settings, address: str) -> list[tuple[str, str, str]]:
    p = Resolver(settings, frozenset(), "sender@remote.example", lambda text: None).resolve(address)
    return [(d.kind, d.value, d.rcpt.address) for d in p.destinations] + \
        [("failure", f.error.dsn, f.rcpt.address) for f in p.failures]


@pytest.mark.parametrize("params, address, expected", [
    ({"mailbox_transport": LMTP}, "alice@test.example", [(TRANSPORT, LMTP, "alice@test.example")]),
    ({"mailbox_transport": LMTP}, "nosuch@test.example", [(TRANSPORT, LMTP, "nosuch@test.example")]),
    ({"mailbox_transport": LMTP}, "info@test.example", [(TRANSPORT, LMTP, "alice@mx.test.example")]),
    ({"mailbox_transport": LMTP}, "team@test.example",
     [(TRANSPORT, LMTP, "alice@mx.test.example"), (FORWARD, "bob@remote.example", "team@test.example")]),
    ({"fallback_transport": "dovecot"}, "alice@test.example", [(MAILBOX, "alice", "alice@test.example")]),
    ({"fallback_transport": "dovecot"}, "nosuch@test.example",
     [(TRANSPORT, "dovecot", "nosuch@test.example")]),
    ({"fallback_transport": "dovecot"}, "ghost@test.example",
     [(TRANSPORT, "dovecot", "nosuch@mx.test.example")]),
    ({"fallback_transport": "dovecot", "mailbox_transport": LMTP}, "nosuch@test.example",
     [(TRANSPORT, LMTP, "nosuch@test.example")]),
    ({}, "nosuch@test.example", [("failure", "5.1.1", "nosuch@test.example")]),
])
def test_plan(base: Path, users: FakeUsers, params: dict[str, str], address: str,
              expected: list[tuple[str, str, str]]) -> None:
    settings = make_settings(base, users, alias_maps=build_aliases(base, ALIASES), **params)
    assert plan(settings, address) == expected


def test_dot_forward_comes_before_mailbox_transport(base: Path, users: FakeUsers) -> None:
    home = Path(users.users["alice"].home)
    (home / ".forward").write_text("alice@elsewhere.example\n")
    if os.geteuid() == 0:
        os.chown(home / ".forward", users.users["alice"].uid, users.users["alice"].gid)
    settings = make_settings(base, users, mailbox_transport=LMTP)
    assert plan(settings, "alice@test.example") == [(FORWARD, "alice@elsewhere.example",
                                                     "alice@test.example")]


class StandInAgent:
    """A delivery agent on private/<name>: records requests, answers with ``reply``."""

    def __init__(self, path: Path, status: str = "sent") -> None:
        self.requests: list[DeliveryRequest] = []
        self.status = status
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            request = codec.expect(codec.recv(conn, "local"), DeliveryRequest, "local")
            self.requests.append(request)
            dsn = {"sent": "2.0.0", "bounced": "5.2.2", "deferred": "4.2.2"}[self.status]
            codec.send(conn, DeliveryResult(request.queue_id, [
                RecipientResult(r.index, self.status, dsn, f"250 {dsn} <{r.address}> Saved", "dovecot")
                for r in request.recipients]))

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def queue(base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = base / "spool"
    (path / "active").mkdir(parents=True)
    (path / "private").mkdir()
    monkeypatch.chdir(path)
    yield path


def request_for(queue: Path, recipients: list[str]) -> DeliveryRequest:
    queue_id = qid.new_queue_id()
    now = time.time()
    env = qfile.Envelope("sender@remote.example", [qfile.Recipient(r) for r in recipients], arrival=now)
    qfile.write_queue_file(str(queue / "active"), queue_id, env, b"Subject: hi\n\nhello\n", durable=False)
    return DeliveryRequest(queue_id, "active", "sender@remote.example", "mx.test.example",
                           [DeliveryRcpt(i, r) for i, r in enumerate(recipients)], arrival=now,
                           active_time=now, dispatch_time=now, transport="local")


@pytest.mark.parametrize("status", ["sent", "bounced", "deferred"])
def test_hand_over_to_the_agent(base: Path, users: FakeUsers, queue: Path, maillog_path: Path,
                                status: str) -> None:
    agent = StandInAgent(queue / "private" / "lmtp", status)
    settings = make_settings(base, users, alias_maps=build_aliases(base, ALIASES),
                             mailbox_transport="lmtp")
    req = request_for(queue, ["other@test.example", "info@test.example"])
    req.recipients = req.recipients[1:]
    try:
        result = LocalAgent(settings).deliver(req)
    finally:
        agent.close()
    [sent] = agent.requests
    assert (sent.queue_id, sent.queue_name, sent.nexthop, sent.transport) == \
        (req.queue_id, "active", "mx.test.example", "lmtp")         # empty next hop: local's own
    assert [(r.index, r.address, r.orig) for r in sent.recipients] == \
        [(1, "alice@mx.test.example", "info@test.example")]
    [answer] = result.results
    assert (answer.index, answer.status) == (1, status)
    assert answer.text.endswith("<alice@mx.test.example> Saved")
    assert "to=<" not in maillog_path.read_text()                  # the agent logs, not local


def test_unreachable_transport_defers(base: Path, users: FakeUsers, queue: Path,
                                      maillog_path: Path) -> None:
    settings = make_settings(base, users, fallback_transport="nowhere:unix:private/x")
    req = request_for(queue, ["nosuch@test.example"])
    [answer] = LocalAgent(settings).deliver(req).results
    assert (answer.status, answer.dsn, answer.text) == ("deferred", "4.3.0", "mail transport unavailable")
    log = maillog_path.read_text()
    assert "warning: " + req.queue_id + ": connect to transport private/nowhere: " in log
    assert (f"{req.queue_id}: to=<nosuch@test.example>, relay=local, " in log
            and "status=deferred (mail transport unavailable)" in log)


def test_smtp_agent_takes_the_handed_over_address(queue: Path) -> None:
    req = request_for(queue, ["info@test.example"])
    path = f"active/{req.queue_id}"
    assert [r.address for r in load_message(path, req).recipients] == ["info@test.example"]
    req.recipients = [DeliveryRcpt(0, "alice@mx.test.example", "info@test.example")]
    assert [(r.address, r.index) for r in load_message(path, req).recipients] == \
        [("alice@mx.test.example", 0)]
    req.recipients = [DeliveryRcpt(0, "")]
    assert [r.address for r in load_message(path, req).recipients] == ["info@test.example"]
