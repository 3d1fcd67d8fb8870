"""A scripted SMTP server for the smtp client's unit tests, and its self-checks.

:class:`Peer` runs on the test's own event loop on 127.0.0.1:0 and answers
as its :class:`Script` says: features, per-command replies, per-recipient
replies, STARTTLS with a given certificate, silence (for timeouts) and a
dropped connection in the middle of DATA.  It records what it received,
content bytes exactly as they came over the wire.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEFAULT_FEATURES = ["PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "SMTPUTF8",
                    "ENHANCEDSTATUSCODES"]


@dataclass
class Script:
    name: str = "peer.example"
    greeting: str = "220 peer.example ESMTP test peer"
    features: list[str] | None = field(default_factory=lambda: list(DEFAULT_FEATURES))  # None: no EHLO
    helo: str = "250 peer.example"
    mail: str = "250 2.1.0 Ok"
    rcpt: dict[str, str] = field(default_factory=dict)       # address -> reply
    rcpt_default: str = "250 2.1.5 Ok"
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    final: str = "250 2.0.0 Ok: queued as PEER1"
    silent_at: str = ""          # GREETING, EHLO, MAIL, RCPT, DATA, "."  -> stop answering
    drop_after: int | None = None  # close after this many content bytes
    tls: ssl.SSLContext | None = None
    starttls_extra: str = ""     # sent right after the 220 to STARTTLS (response injection)
    auth: list[str] = field(default_factory=list)     # SASL mechanisms offered (AUTH ...)
    auth_reply: str = "235 2.7.0 Authentication successful"


@dataclass
class Record:
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    tls: bool = False
    chunks: list[bytes] = field(default_factory=list)     # BDAT chunks of the open transaction


class Peer:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.sessions: list[Record] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.active = 0
        self.max_active = 0

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def commands(self) -> list[str]:
        return [c for s in self.sessions for c in s.commands]

    @property
    def messages(self) -> list[bytes]:
        return [m for s in self.sessions for m in s.messages]

    async def _hang(self) -> None:
        await asyncio.sleep(3600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = Record()
        self.sessions.append(record)
        s = self.script
        self.active += 1
        self.max_active = max(self.max_active, self.active)

        async def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            if s.silent_at == "GREETING":
                return await self._hang()
            await say(s.greeting)
            in_mail = False
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                record.commands.append(line)
                verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                if s.silent_at == verb:
                    return await self._hang()
                if verb == "EHLO":
                    if s.features is None:
                        await say("502 5.5.2 Error: command not recognized")
                        continue
                    feats = list(s.features) + (["STARTTLS"] if s.tls and not record.tls else [])
                    feats += [f"AUTH {' '.join(s.auth)}"] if s.auth else []
                    lines = [s.name, *feats]
                    await say("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}"
                                          for i, t in enumerate(lines)))
                elif verb == "HELO":
                    await say(s.helo)
                elif verb == "STARTTLS" and s.tls:
                    await say("220 2.0.0 Ready to start TLS" + s.starttls_extra)
                    if s.starttls_extra:
                        return await self._hang()
                    await writer.start_tls(s.tls)
                    record.tls = True
                elif verb == "AUTH" and s.auth:
                    words = line.split()
                    mech = words[1].upper() if len(words) > 1 else ""
                    prompts = {"PLAIN": [] if len(words) > 2 else [""],
                               "LOGIN": ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
                               "CRAM-MD5": ["PDEyMzQ1LjY3ODlAcGVlci5leGFtcGxlPg=="]}.get(mech, [])
                    for prompt in prompts:
                        await say(f"334 {prompt}")
                        answer = (await reader.readline()).decode().rstrip("\r\n")
                        record.commands.append(answer)
                    await say(s.auth_reply)
                elif verb == "BDAT" and in_mail:
                    words = line.split()
                    chunk = await reader.readexactly(int(words[1]))
                    record.chunks.append(chunk)
                    if len(words) > 2 and words[2].upper() == "LAST":
                        in_mail = False
                        record.messages.append(b"".join(record.chunks))
                        record.chunks.clear()
                        await say(s.final)
                    else:
                        await say(f"250 2.0.0 {len(chunk)} octets received")
                elif verb == "MAIL":
                    await say(s.mail)
                    in_mail = s.mail.startswith("2")
                elif verb == "RCPT" and not in_mail:
                    await say("503 5.5.1 Error: need MAIL command")
                elif verb == "RCPT":
                    address = line[line.find("<") + 1:line.find(">")]
                    await say(s.rcpt.get(address, s.rcpt_default))
                elif verb == "DATA" and not in_mail:
                    await say("503 5.5.1 Error: need RCPT command")
                elif verb == "DATA":
                    in_mail = False
                    await say(s.data)
                    if not s.data.startswith("354"):
                        continue
                    content = await self._content(reader, writer)
                    if content is None:
                        return
                    record.messages.append(content)
                    if s.silent_at == ".":
                        return await self._hang()
                    await say(s.final)
                elif verb == "RSET":
                    in_mail = False
                    await say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await say("221 2.0.0 Bye")
                    return
                else:
                    await say("250 2.0.0 Ok")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self.active -= 1
            writer.close()

    async def _content(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        data = bytearray()
        while True:
            raw = await reader.readline()
            if not raw:
                return None
            data += raw
            if self.script.drop_after is not None and len(data) >= self.script.drop_after:
                writer.transport.abort()
                return None
            if raw == b".\r\n":
                return bytes(data)


def make_cert(directory: Path, name: str = "peer") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl req)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# -- self-checks ----------------------------------------------------------------

async def _talk(port: int, lines: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = await reader.readline()
    for line in lines:
        writer.write(line)
        await writer.drain()
        out += await reader.readuntil(b"\r\n")
        while out.splitlines()[-1][3:4] == b"-":
            out += await reader.readuntil(b"\r\n")
    writer.close()
    return out


def test_peer_answers_as_scripted() -> None:
    async def run() -> None:
        script = Script(rcpt={"bad@x": "550 5.1.1 no"})
        async with Peer(script) as peer:
            out = await _talk(peer.port, [b"EHLO me\r\n", b"MAIL FROM:<a@x>\r\n",
                                          b"RCPT TO:<bad@x>\r\n", b"DATA\r\n",
                                          b"hi\r\n..dot\r\n.\r\n"])
        assert b"250-PIPELINING" in out and b"550 5.1.1 no" in out
        assert out.rstrip().endswith(b"250 2.0.0 Ok: queued as PEER1")
        assert peer.messages == [b"hi\r\n..dot\r\n.\r\n"]

    asyncio.run(asyncio.wait_for(run(), 10))


def test_cert_is_made(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    assert server_context(cert, key)
    assert socket.inet_aton("127.0.0.1")


@pytest.fixture(scope="session")
def peer_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))
