"""anvil: counting per client (postpy.anvil.table), the request dispatch and a
real conversation over a unix socket, malformed requests included
(postpy.anvil.service), and smtpd's client when anvil is gone or silent
(postpy.smtpd.anvil_client)."""

from __future__ import annotations

import asyncio
import re
import struct
from collections import Counter
from pathlib import Path

import pytest

from postpy.anvil import service
from postpy.anvil.table import Table
from postpy.ipc import codec
from postpy.ipc.messages import ANVIL_FAIL, ANVIL_OK, AnvilReply, AnvilRequest
from postpy.smtpd.anvil_client import AnvilClient
from postpy.util import maillog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(unit: float = 60.0) -> tuple[Table, Clock]:
    clock = Clock()
    return Table(unit=unit, clock=clock, wall=lambda: 0.0), clock


def test_connection_count_and_rate() -> None:
    t, _ = table()
    assert (t.connect("smtp:192.0.2.1").count, t.entries["smtp:192.0.2.1"].rate) == (1, 1)
    entry = t.connect("smtp:192.0.2.1")
    assert (entry.count, entry.rate) == (2, 2)
    t.disconnect("smtp:192.0.2.1")
    assert t.lookup("smtp:192.0.2.1").count == 1
    assert t.connect("smtp:192.0.2.2").count == 1          # another client, its own numbers
    t.disconnect("smtp:192.0.2.9")                          # unknown: ignored
    t.disconnect("smtp:192.0.2.2", 5)
    assert t.lookup("smtp:192.0.2.2").count == 0            # never below zero


def test_rates_restart_after_a_time_unit() -> None:
    t, clock = table(unit=60)
    for _ in range(3):
        t.event("message", "s:a")
    assert t.event("message", "s:a") == 4
    assert t.event("recipient", "s:a") == 1
    clock.now += 59.9
    assert t.event("message", "s:a") == 5
    clock.now += 0.2                                        # the window (from the first event) ended
    assert t.lookup("s:a").message == 0                     # lookup counts nothing, shows the new window
    assert t.event("message", "s:a") == 1
    assert t.event("auth", "s:a") == 1
    assert t.event("newtls", "s:a") == 1


def test_rate_window_keeps_open_connections() -> None:
    t, clock = table(unit=10)
    t.connect("s:a")
    clock.now += 11
    entry = t.connect("s:a")
    assert (entry.count, entry.rate) == (2, 1)


def test_idle_clients_are_forgotten() -> None:
    t, clock = table(unit=10)
    t.connect("s:busy")
    t.connect("s:gone")
    t.disconnect("s:gone")
    t.event("message", "s:mailer")
    clock.now += 5
    assert t.sweep() == 0                                   # windows still open
    clock.now += 5
    assert t.sweep() == 2
    assert set(t.entries) == {"s:busy"}                     # an open connection keeps it


def test_statistics_lines() -> None:
    t, _ = table(unit=60)
    t.connect("smtp:127.0.0.1")
    t.connect("smtp:127.0.0.1")
    t.event("recipient", "smtp:127.0.0.2")
    lines = t.statistics()
    assert lines[0].startswith("statistics: max connection rate 2/60s for (smtp:127.0.0.1) at ")
    assert re.fullmatch(r"statistics: max connection count 2 for \(smtp:127\.0\.0\.1\) at "
                        r"[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d", lines[1])
    assert lines[2].startswith("statistics: max recipient rate 1/60s for (smtp:127.0.0.2)")
    assert lines[3].startswith("statistics: max cache size 2 at ")
    assert t.statistics() == []                             # reset after logging


def test_answer_each_request() -> None:
    t, _ = table()
    mine: Counter[str] = Counter()
    assert service.answer(t, AnvilRequest("connect", "s:a"), mine) == AnvilReply(ANVIL_OK, count=1, rate=1)
    assert service.answer(t, AnvilRequest("message", "s:a"), mine).rate == 1
    assert service.answer(t, AnvilRequest("recipient", "s:a"), mine).rate == 1
    assert service.answer(t, AnvilRequest("newtls_report", "s:a"), mine).rate == 0
    assert service.answer(t, AnvilRequest("newtls", "s:a"), mine).rate == 1
    assert service.answer(t, AnvilRequest("newtls_report", "s:a"), mine).rate == 1
    assert service.answer(t, AnvilRequest("auth", "s:a"), mine).rate == 1
    assert service.answer(t, AnvilRequest("lookup", "s:a"), mine) == AnvilReply(
        ANVIL_OK, count=1, rate=1, message=1, recipient=1, newtls=1, auth=1)
    assert service.answer(t, AnvilRequest("bogus", "s:a"), mine).status == ANVIL_FAIL
    # Another client's disconnect cannot take this one's connection away.
    assert service.answer(t, AnvilRequest("disconnect", "s:a"), Counter()).status == ANVIL_OK
    assert t.lookup("s:a").count == 1
    service.answer(t, AnvilRequest("disconnect", "s:a"), mine)
    assert t.lookup("s:a").count == 0 and not mine


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "maillog"
    maillog.setup("anvil", maillog_file=str(path), hostname="mx")
    return path


async def _anvil(tmp_path: Path, t: Table) -> tuple[str, asyncio.Server]:
    path = str(tmp_path / "anvil")
    server = await asyncio.start_unix_server(lambda r, w: service.serve(t, r, w), path)
    return path, server


def test_conversation_with_malformed_requests(tmp_path: Path, log: Path) -> None:
    t = Table(unit=60)

    async def run() -> None:
        path, server = await _anvil(tmp_path, t)
        reader, writer = await asyncio.open_unix_connection(path)

        async def ask(raw: bytes) -> AnvilReply:
            writer.write(raw)
            return codec.expect(await codec.async_recv(reader, "anvil"), AnvilReply, "anvil")

        assert (await ask(codec.encode(AnvilRequest("connect", "s:a")))).count == 1
        payload = b'{"type":"anvil_request","request":"connect"}'            # no ident
        assert (await ask(struct.pack(">I", len(payload) + 1) + b"A" + payload)).status == ANVIL_FAIL
        assert (await ask(struct.pack(">I", 4) + b"A{]x")).status == ANVIL_FAIL   # not JSON
        assert (await ask(codec.encode_data(b"junk"))).status == ANVIL_FAIL
        assert (await ask(codec.encode(AnvilRequest("explode", "s:a")))).status == ANVIL_FAIL
        assert (await ask(codec.encode(AnvilRequest("connect", "s:a")))).count == 2   # goes on
        writer.write(struct.pack(">I", 0x7FFFFFFF) + b"A")                 # a broken frame
        await writer.drain()
        assert await reader.read() == b""                                   # that connection ends
        assert t.lookup("s:a").count == 0                                   # and its sessions with it
        # anvil itself carries on.
        reader, writer = await asyncio.open_unix_connection(path)
        assert (await ask(codec.encode(AnvilRequest("connect", "s:a")))).count == 1
        writer.close()
        server.close()

    asyncio.run(run())
    text = log.read_text()
    assert "warning: anvil: anvil_request from anvil client: missing member ident" in text
    assert "warning: anvil: malformed attributes from anvil client" in text
    assert "warning: anvil: unknown request 'explode' from anvil client" in text
    assert re.search(r"warning: anvil: frame of 2147483647 bytes from anvil client .*; closing", text)


def test_client_without_anvil_applies_no_limit(tmp_path: Path, log: Path) -> None:
    async def run() -> None:
        client = AnvilClient(str(tmp_path / "missing"), timeout=0.5, retry=0.2)
        assert await client.request("connect", "s:a") is None
        assert await client.request("connect", "s:a") is None        # within the retry delay
        assert not client.reachable
        t = Table(unit=60)
        client.path, server = await _anvil(tmp_path, t)
        await asyncio.sleep(0.25)
        reply = await client.request("connect", "s:a")
        assert reply is not None and reply.count == 1 and client.reachable
        server.close()

    asyncio.run(run())
    assert log.read_text().count("client connection and rate limits are off") == 1


def test_client_times_out_on_a_silent_anvil(tmp_path: Path, log: Path) -> None:
    async def run() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        path = str(tmp_path / "silent")
        server = await asyncio.start_unix_server(silent, path)
        client = AnvilClient(path, timeout=0.3)
        started = asyncio.get_running_loop().time()
        assert await client.request("connect", "s:a") is None
        assert asyncio.get_running_loop().time() - started < 1.0
        server.close()

    asyncio.run(run())
    assert "no reply within 0.3s; client connection and rate limits are off" in log.read_text()


def test_client_reconnects_once_to_a_restarted_anvil(tmp_path: Path, log: Path) -> None:
    async def run() -> None:
        writers: list[asyncio.StreamWriter] = []
        t = Table(unit=60)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await service.serve(t, reader, writer)

        path = str(tmp_path / "anvil")
        server = await asyncio.start_unix_server(serve, path)
        client = AnvilClient(path)
        reply = await client.request("connect", "s:a")
        assert reply is not None and reply.count == 1
        writers[0].close()                  # anvil killed: its end of the connection goes away
        await asyncio.sleep(0.05)
        t.entries.clear()                   # ... and the new anvil starts from zero
        reply = await client.request("connect", "s:a")
        assert reply is not None and reply.count == 1 and len(writers) == 2
        server.close()

    asyncio.run(run())
    assert "limits are off" not in log.read_text()
