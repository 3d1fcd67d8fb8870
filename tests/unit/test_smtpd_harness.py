"""A smtpd without master: the real session code on an asyncio loop in a
thread, with a recording stand-in for cleanup on a unix socket.

Used by the other test_smtpd_* unit tests (``from test_smtpd_harness
import ...``); the tests at the bottom check the stand-in itself.  The
integration tests (tests/integration/test_smtpd_*.py) run the real
system instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postpy.anvil import service as anvil_service
from postpy.anvil.table import Table
from postpy.config.maincf import Config
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, CleanupHello, CleanupResult
from postpy.smtpd.service import serve_client
from postpy.smtpd.settings import Settings
from postpy.util import maillog

BASE_PARAMS = {
    "myhostname": "mx.test.example",
    "mydestination": "$myhostname, localhost, test.example",
    "mynetworks": "127.0.0.1/32",
    "local_recipient_maps": "inline:{alice=x, bob=x, carol=x, root=x, postmaster=x}",
    "recipient_delimiter": "+",
    "smtpd_error_sleep_time": "0",
    "smtpd_client_event_limit_exceptions": "",
}


@dataclass
class Received:
    queue_id: str
    envelope: CleanupEnvelope
    content: bytes = b""
    complete: bool = False      # E frame seen (and answered)


@dataclass
class FakeCleanup:
    """Speaks cleanup's side of the conversation and keeps what it got."""

    path: str
    result_status: str = "ok"
    result_reply: str = ""
    messages: list[Received] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue_id = f"TESTQ{next(self._ids):05d}"
        try:
            await codec.async_send(writer, CleanupHello(queue_id))
            env = codec.expect(await codec.async_recv(reader, "smtpd"), CleanupEnvelope, "smtpd")
            got = Received(queue_id, env)
            self.messages.append(got)
            parts = []
            while True:
                kind, payload = await codec.async_recv_frame(reader, "smtpd")
                if kind == codec.DATA:
                    parts.append(payload)
                elif kind == codec.END:
                    break
                else:
                    raise codec.IpcError("unexpected frame")
            got.content = b"".join(parts)
            got.complete = True
            await codec.async_send(writer, CleanupResult(self.result_status, queue_id,
                                                         self.result_reply, len(got.content)))
        except (EOFError, codec.IpcError, ConnectionError):
            pass
        finally:
            writer.close()

    def queued(self) -> list[Received]:
        return [m for m in self.messages if m.complete]


class SmtpdHarness:
    """Start with :meth:`start`; ``port`` is smtpd's TCP port on 127.0.0.1."""

    def __init__(self, tmp: Path, **params: str) -> None:
        self.tmp = tmp
        (tmp / "private").mkdir(exist_ok=True)
        self.log_path = tmp / "maillog"
        merged = dict(BASE_PARAMS)
        merged.update(params)
        self.cfg = Config(str(tmp), explicit=merged)
        self.settings = Settings.from_config(self.cfg)
        self.settings.cleanup_path = str(tmp / "private" / "cleanup")
        self.settings.queue_path = str(tmp)
        self.cleanup = FakeCleanup(self.settings.cleanup_path)
        self.anvil_path = str(tmp / "private" / "anvil")     # a real anvil, in this loop
        self.anvil = Table(unit=self.cfg.get_time("anvil_rate_time_unit"))
        if self.settings.limits is not None:
            self.settings.limits.anvil.path = self.anvil_path
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread: threading.Thread | None = None
        self._servers: list[Any] = []

    def start(self) -> SmtpdHarness:
        maillog.setup("smtpd", maillog_file=str(self.log_path), hostname="mx")
        ready = threading.Event()

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await serve_client(self.settings, reader, writer)
            except asyncio.CancelledError:
                pass        # the harness is stopping
            finally:
                writer.close()

        async def boot() -> None:
            unix = await asyncio.start_unix_server(self.cleanup.serve, self.cleanup.path)
            anvil = await asyncio.start_unix_server(
                lambda r, w: anvil_service.serve(self.anvil, r, w), self.anvil_path)
            tcp = await asyncio.start_server(session, "127.0.0.1", 0, limit=1 << 20)
            self._servers = [unix, anvil, tcp]
            self.port = tcp.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(boot())
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "smtpd harness did not start"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()

    # -- helpers for tests ------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line /{pattern}/ in:\n{self.log()}")
            time.sleep(0.01)

    def wait_messages(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.cleanup.queued()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages, have {self.cleanup.queued()}")
            time.sleep(0.01)
        return self.cleanup.queued()

    def connect(self, source: str = "127.0.0.1") -> RawClient:
        return RawClient(self.port, source)


class RawClient:
    """A byte-level SMTP client: send exactly what a test says, read replies."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One (possibly multi-line) reply, lines joined by LF, CRLFs removed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; got {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str | bytes) -> str:
        self.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed the connection (waits up to the timeout)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def starttls(self) -> None:
        """Handshake as a TLS client (no verification) on the same socket."""
        assert not self.buf, f"unread bytes before TLS: {self.buf!r}"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def smtpd(tmp_path: Path) -> Iterator[SmtpdHarness]:
    harness = SmtpdHarness(tmp_path).start()
    yield harness
    harness.stop()


@pytest.fixture
def smtpd_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[SmtpdHarness] = []

    def make(**params: str) -> SmtpdHarness:
        sub = tmp_path / f"h{len(made)}"
        sub.mkdir()
        harness = SmtpdHarness(sub, **params).start()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate and key for mx.test.example (openssl req)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=mx.test.example"],
                   check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def greet(client: RawClient, helo: str = "client.example") -> None:
    assert client.reply().startswith("220 ")
    assert client.cmd(f"EHLO {helo}").startswith("250")


# -- the stand-in itself ------------------------------------------------------------

def test_harness_queues_one_message(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>").startswith("250 2.1.0")
    assert c.cmd("RCPT TO:<alice@test.example>").startswith("250 2.1.5")
    assert c.cmd("DATA").startswith("354 ")
    reply = c.cmd(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    assert reply == "250 2.0.0 Ok: queued as TESTQ00001"
    assert c.cmd("QUIT").startswith("221 2.0.0")
    msg, = smtpd.wait_messages(1)
    assert msg.content == b"Subject: x\n\nhello\n"
    assert msg.envelope.sender == "a@example.org"
    assert [r.address for r in msg.envelope.recipients] == ["alice@test.example"]
    smtpd.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 "
                   r"quit=1 commands=5")


def test_harness_sees_abort(smtpd: SmtpdHarness) -> None:
    c = smtpd.connect()
    greet(c)
    c.cmd("MAIL FROM:<>")
    c.cmd("RCPT TO:<bob@test.example>")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: half\r\n\r\npart of it")
    c.close()
    smtpd.wait_log(r"lost connection after DATA \(\d+ bytes\) from localhost")
    deadline = time.monotonic() + 5
    while not smtpd.cleanup.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    assert smtpd.cleanup.messages and not smtpd.cleanup.queued()
    assert os.path.exists(smtpd.cleanup.path)
