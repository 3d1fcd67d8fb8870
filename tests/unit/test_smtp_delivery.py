"""One DeliveryRequest through postpy.smtp.delivery.Agent, with real queue files,
scripted peers on loopback and the maillog lines it writes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_smtp_peer import Peer, Script

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult
from postpy.queue import qfile
from postpy.smtp import service
from postpy.smtp.delivery import Agent
from postpy.smtp.dns import DestinationResolver, Target
from postpy.smtp.failure import DeliveryFailure, permanent
from postpy.smtp.settings import AgentSettings, ClientSettings, Timeouts
from postpy.smtp.tls import make_policy
from postpy.util import maillog


class FixedTargets(DestinationResolver):
    """Answers every next hop with the given targets (or failure)."""

    def __init__(self, targets: list[Target] | DeliveryFailure) -> None:
        super().__init__(resolver=None)  # type: ignore[arg-type]
        self.fixed = targets
        self.lookups = 0

    async def targets(self, nexthop: str, default_port: int) -> list[Target]:
        self.lookups += 1
        if isinstance(self.fixed, DeliveryFailure):
            raise self.fixed
        return list(self.fixed)


def agent(targets: list[Target] | DeliveryFailure, **kw: Any) -> Agent:
    client = ClientSettings(helo_name="relay.example", myhostname="relay.example",
                            tls=make_policy("none"), timeouts=Timeouts(helo=2, data_done=2))
    return Agent(AgentSettings(client=client, **kw), FixedTargets(targets))


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "active").mkdir()
    monkeypatch.chdir(tmp_path)
    maillog.setup("smtp", maillog_file=str(tmp_path / "maillog"), hostname="relay.example")
    return tmp_path


def enqueue(queue: Path, qid: str, *rcpts: str, content: bytes = b"Subject: hi\n\nhello\n") -> DeliveryRequest:
    env = qfile.Envelope(sender="alice@example.com",
                         recipients=[qfile.Recipient(r) for r in rcpts], arrival=time.time() - 1)
    qfile.write_queue_file(str(queue / "active"), qid, env, content, durable=False)
    now = time.time()
    return DeliveryRequest(queue_id=qid, queue_name="active", sender=env.sender, nexthop="example.org",
                           recipients=[DeliveryRcpt(i, r) for i, r in enumerate(rcpts)],
                           arrival=env.arrival, active_time=now, dispatch_time=now, transport="smtp")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def statuses(result: DeliveryResult) -> list[tuple[int, str, str]]:
    return [(r.index, r.status, r.dsn) for r in result.results]


def log(queue: Path) -> str:
    return (queue / "maillog").read_text()


def test_sent_is_logged_in_postfix_shape(queue: Path) -> None:
    async def go() -> tuple[DeliveryResult, int]:
        async with Peer() as peer:
            request = enqueue(queue, "AAA1", "bob@example.org", "carol@example.org")
            a = agent([Target("mx.example.org", "127.0.0.1", peer.port, 10)])
            result = await a.deliver(request)
            a.cache.close_all()
            return result, peer.port
    result, port = run(go())
    assert statuses(result) == [(0, "sent", "2.0.0"), (1, "sent", "2.0.0")]
    assert result.results[0].relay == f"mx.example.org[127.0.0.1]:{port}"
    line = re.compile(
        r"postpy/smtp\[\d+\]: AAA1: to=<bob@example.org>, relay=mx.example.org\[127.0.0.1\]:"
        + str(port) + r", delay=[0-9.]+, delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2.0.0, "
        r"status=sent \(250 2.0.0 Ok: queued as PEER1\)$", re.M)
    assert line.search(log(queue)), log(queue)


def test_next_host_after_refused_connection_and_4xx_greeting(queue: Path) -> None:
    async def go() -> tuple[DeliveryResult, Peer, Peer]:
        async with Peer(Script(greeting="421 4.7.0 not now")) as busy, Peer() as good:
            dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            dead_port = dead.sockets[0].getsockname()[1]
            dead.close()
            await dead.wait_closed()
            targets = [Target("dead.example", "127.0.0.1", dead_port, 10),
                       Target("busy.example", "127.0.0.1", busy.port, 20),
                       Target("good.example", "127.0.0.1", good.port, 30)]
            result = await agent(targets, cache_on_demand=False).deliver(enqueue(queue, "AAA2", "bob@example.org"))
            return result, busy, good
    result, busy, good = run(go())
    assert statuses(result) == [(0, "sent", "2.0.0")]
    assert result.results[0].relay.startswith("good.example[127.0.0.1]")
    assert len(busy.sessions) == 1 and len(good.messages) == 1


def test_all_hosts_failing_defers_with_the_last_reason(queue: Path) -> None:
    async def go() -> DeliveryResult:
        async with Peer(Script(greeting="421 4.7.0 not now")) as busy:
            targets = [Target("busy.example", "127.0.0.1", busy.port, 10)] * 2
            return await agent(targets).deliver(enqueue(queue, "AAA3", "bob@example.org"))
    result = run(go())
    assert statuses(result) == [(0, "deferred", "4.7.0")]
    assert "refused to talk to me: 421 4.7.0 not now" in result.results[0].text
    assert re.search(r"AAA3: to=<bob@example.org>, relay=busy.example\[127.0.0.1\]:\d+, .*status=deferred \(host busy.example",
                     log(queue))


def test_lookup_failure_bounces(queue: Path) -> None:
    failure = permanent("Host or domain name not found. Name service error for name=nx.test "
                        "type=MX: Host not found", "5.1.2")
    result = run(agent(failure).deliver(enqueue(queue, "AAA4", "bob@nx.test")))
    assert statuses(result) == [(0, "bounced", "5.1.2")]
    assert "AAA4: to=<bob@nx.test>, relay=none, " in log(queue)


def test_connection_is_reused_for_the_next_message(queue: Path) -> None:
    async def go() -> tuple[list[DeliveryResult], Peer, FixedTargets]:
        async with Peer() as peer:
            a = agent([Target("mx.example.org", "127.0.0.1", peer.port)])
            first = await a.deliver(enqueue(queue, "AAA5", "a@example.org"))
            second = await a.deliver(enqueue(queue, "AAA6", "b@example.org"))
            a.cache.close_all()
            assert isinstance(a.destinations, FixedTargets)
            return [first, second], peer, a.destinations
    results, peer, lookups = run(go())
    assert [statuses(r) for r in results] == [[(0, "sent", "2.0.0")]] * 2
    assert len(peer.sessions) == 1 and len(peer.messages) == 2
    assert lookups.lookups == 1
    assert re.search(r"AAA6: to=<b@example.org>, relay=\S+, conn_use=2, ", log(queue))


def test_stale_cached_connection_is_replaced(queue: Path) -> None:
    async def go() -> tuple[DeliveryResult, Peer]:
        async with Peer() as peer:
            a = agent([Target("mx.example.org", "127.0.0.1", peer.port)])
            await a.deliver(enqueue(queue, "AAA7", "a@example.org"))
            for entries in a.cache._idle.values():      # the server hangs up on the parked session
                entries[0][0].writer.transport.abort()
            result = await a.deliver(enqueue(queue, "AAA8", "b@example.org"))
            a.cache.close_all()
            return result, peer
    result, peer = run(go())
    assert statuses(result) == [(0, "sent", "2.0.0")]
    assert len(peer.sessions) == 2


def test_destination_concurrency_is_bounded(queue: Path) -> None:
    async def go() -> tuple[list[DeliveryResult], Peer]:
        async with Peer() as peer:
            a = agent([Target("mx.example.org", "127.0.0.1", peer.port)], destination_limit=2,
                      cache_on_demand=False)
            requests = [enqueue(queue, f"B{i:03d}", f"r{i}@example.org") for i in range(8)]
            results = await asyncio.gather(*(a.deliver(r) for r in requests))
            return results, peer
    results, peer = run(go())
    assert all(statuses(r)[0][1] == "sent" for r in results)
    assert 1 <= peer.max_active <= 2


def test_missing_queue_file_defers(queue: Path) -> None:
    request = enqueue(queue, "AAA9", "a@example.org")
    (queue / "active" / "AAA9").unlink()
    result = run(agent([]).deliver(request))
    assert statuses(result) == [(0, "deferred", "4.3.0")]
    assert "cannot read queue file" in result.results[0].text


def test_recipient_index_outside_the_file_defers(queue: Path) -> None:
    request = enqueue(queue, "AAB1", "a@example.org")
    request.recipients.append(DeliveryRcpt(5, "ghost@example.org"))
    result = run(agent([]).deliver(request))
    assert [r.status for r in result.results] == ["deferred", "deferred"]


def test_service_handler_answers_requests_on_one_connection(queue: Path) -> None:
    async def go() -> list[DeliveryResult]:
        async with Peer() as peer:
            a = agent([Target("mx.example.org", "127.0.0.1", peer.port)])
            ctx = SimpleNamespace(extra={"agent": a}, cfg=SimpleNamespace(get_size=lambda name: 1 << 20))
            server = await asyncio.start_server(lambda r, w: service.handle(ctx, r, w),  # type: ignore[arg-type]
                                                "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            answers = []
            for qid in ("AAC1", "AAC2"):
                await codec.async_send(writer, enqueue(queue, qid, "x@example.org"))
                answers.append(await codec.async_recv(reader, "smtp"))
            writer.close()
            server.close()
            a.cache.close_all()
            return answers
    answers = run(go())
    assert [a.queue_id for a in answers] == ["AAC1", "AAC2"]
    assert all(a.results[0].status == "sent" for a in answers)
