"""The Dovecot auth client: against a scripted server, then a real Dovecot."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from postpy.sasl import dovecot
from postpy.sasl.backend import AuthResult, ClientInfo
from postpy.sasl.dovecot import DovecotBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dovecot_helper  # noqa: E402

HANDSHAKE = (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
             b"SPID\t42\nCUID\t7\nCOOKIE\tabcdef\nDONE\n")
CLIENT = ClientInfo(addr="192.0.2.7", port="50000", server_addr="127.0.0.1", server_port="587",
                    tls=True)


@pytest.mark.parametrize("raw", ["plain", "a\tb", "x\ny\rz", "\x01", "\x00", ""])
def test_escape_roundtrip(raw: str) -> None:
    escaped = dovecot.escape(raw)
    assert "\t" not in escaped and "\n" not in escaped
    assert dovecot.unescape(escaped) == raw


@pytest.mark.parametrize("line, verb, rid, params, flags", [
    ("OK\t1\tuser=alice\n", "OK", 1, {"user": "alice"}, set()),
    ("FAIL\t12\tuser=a\treason=bad\x01tpw\ttemp\n", "FAIL", 12, {"user": "a", "reason": "bad\tpw"},
     {"temp"}),
    ("FAIL\t3\n", "FAIL", 3, {}, set()),
])
def test_parse_reply(line: str, verb: str, rid: int, params: dict[str, str],
                     flags: set[str]) -> None:
    reply = dovecot.parse_reply(line)
    assert reply is not None
    assert (reply.verb, reply.request_id, reply.params, reply.flags) == (verb, rid, params, flags)


@pytest.mark.parametrize("line", ["", "DONE\n", "OK\n", "OK\tx\n", "SPID\t1\n", "MECH\tPLAIN\n"])
def test_parse_reply_ignores(line: str) -> None:
    assert dovecot.parse_reply(line) is None


def test_auth_line() -> None:
    line = dovecot.auth_line(5, "smtp", "alice", "secret", CLIENT).decode()
    fields = line.rstrip("\n").split("\t")
    assert fields[:5] == ["AUTH", "5", "PLAIN", "service=smtp", "nologin"]
    assert "lip=127.0.0.1" in fields and "rip=192.0.2.7" in fields and "secured" in fields
    assert fields[-1] == "resp=" + base64.b64encode(b"\0alice\0secret").decode()
    plain = dovecot.auth_line(6, "smtp", "a", "b", ClientInfo()).decode()
    assert "secured" not in plain and "rip=" not in plain


# -- a scripted server ----------------------------------------------------------

Responder = Callable[[list[str], asyncio.StreamWriter], Awaitable[None]]


async def serve(path: str, respond: Responder, handshake: bytes = HANDSHAKE,
                seen: list[str] | None = None) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(handshake)
        try:
            while line := await reader.readline():
                text = line.decode().rstrip("\n")
                if seen is not None:
                    seen.append(text)
                if text.startswith("AUTH\t"):
                    await respond(text.split("\t"), writer)
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path)


def password_of(fields: list[str]) -> tuple[str, str]:
    resp = next(f for f in fields if f.startswith("resp="))[5:]
    _, user, pw = base64.b64decode(resp).decode().split("\0")
    return user, pw


async def check_password(fields: list[str], writer: asyncio.StreamWriter) -> None:
    user, pw = password_of(fields)
    if pw == "secret":
        writer.write(f"OK\t{fields[1]}\tuser={user.upper()}\n".encode())
    elif pw == "tempfail":
        writer.write(f"FAIL\t{fields[1]}\tuser={user}\ttemp\n".encode())
    elif pw == "challenge":
        writer.write(f"CONT\t{fields[1]}\t\n".encode())
    elif pw == "hangup":
        writer.close()
    elif pw == "silent":
        pass
    else:
        writer.write(f"FAIL\t{fields[1]}\tuser={user}\treason=wrong password\n".encode())


@pytest.fixture
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "auth")


T = TypeVar("T")


def scenario(sock: str, body: Callable[[DovecotBackend], Awaitable[T]],
             respond: Responder = check_password, handshake: bytes = HANDSHAKE,
             seen: list[str] | None = None, timeout: float = 5.0) -> T:
    async def main() -> T:
        srv = await serve(sock, respond, handshake, seen)
        backend = DovecotBackend(sock, timeout=timeout, connect_timeout=2.0)
        try:
            async with asyncio.timeout(20):
                return await body(backend)
        finally:
            await backend.close()
            srv.close()
            await srv.wait_closed()

    return asyncio.run(main())


def test_ok_fail_temp_and_canonical_user(sock: str) -> None:
    seen: list[str] = []

    async def body(b: DovecotBackend) -> list[AuthResult]:
        return [await b.authenticate("alice", pw, CLIENT)
                for pw in ("secret", "wrong", "tempfail", "challenge")]

    ok, bad, temp, cont = scenario(sock, body, seen=seen)
    assert ok == AuthResult(True, "ALICE")
    assert not bad.ok and not bad.temporary_failure and bad.text == "wrong password"
    assert temp.temporary_failure and not temp.ok
    assert cont.temporary_failure
    assert seen[0] == "VERSION\t1\t1" and seen[1] == f"CPID\t{os.getpid()}"
    assert sum(1 for s in seen if s.startswith("VERSION")) == 1     # one connection reused
    assert [s.split("\t")[1] for s in seen if s.startswith("AUTH")] == ["1", "2", "3", "4"]


def test_concurrent_requests_are_matched_by_id(sock: str) -> None:
    async def reverse_order(fields: list[str], writer: asyncio.StreamWriter) -> None:
        user, pw = password_of(fields)
        await asyncio.sleep(0.2 if user == "first" else 0.0)
        verb = "OK" if pw == "secret" else "FAIL"
        writer.write(f"{verb}\t{fields[1]}\tuser={user}\n".encode())

    async def body(b: DovecotBackend) -> list[AuthResult]:
        return list(await asyncio.gather(b.authenticate("first", "secret", CLIENT),
                                         b.authenticate("second", "wrong", CLIENT)))

    first, second = scenario(sock, body, respond=reverse_order)
    assert first == AuthResult(True, "first") and not second.ok


def test_hangup_is_temporary_and_next_request_reconnects(sock: str) -> None:
    seen: list[str] = []

    async def body(b: DovecotBackend) -> list[AuthResult]:
        return [await b.authenticate("alice", "hangup", CLIENT),
                await b.authenticate("alice", "secret", CLIENT)]

    gone, ok = scenario(sock, body, seen=seen)
    assert gone.temporary_failure and "closed" in gone.text
    assert ok.ok
    assert sum(1 for s in seen if s.startswith("VERSION")) == 2


def test_no_answer_times_out(sock: str) -> None:
    async def body(b: DovecotBackend) -> AuthResult:
        return await b.authenticate("alice", "silent", CLIENT)

    result = scenario(sock, body, timeout=0.3)
    assert isinstance(result, AuthResult) and result.temporary_failure
    assert "no answer" in result.text


@pytest.mark.parametrize("handshake, text", [
    (b"VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", "unsupported protocol version"),
    (b"VERSION\t1\t2\nMECH\tCRAM-MD5\nDONE\n", "does not offer the PLAIN"),
    (b"VERSION\t1\t2\nMECH\tPLAIN\n", "timed out"),       # no DONE ever
])
def test_bad_handshake(sock: str, handshake: bytes, text: str) -> None:
    async def body(b: DovecotBackend) -> AuthResult:
        return await b.authenticate("alice", "secret", CLIENT)

    async def hang_up_after_handshake(fields: list[str], writer: asyncio.StreamWriter) -> None:
        writer.close()

    result = scenario(sock, body, respond=hang_up_after_handshake, handshake=handshake)
    assert isinstance(result, AuthResult) and result.temporary_failure and text in result.text


def test_no_socket(tmp_path: Path) -> None:
    result = asyncio.run(DovecotBackend(str(tmp_path / "none")).authenticate("a", "b", CLIENT))
    assert result.temporary_failure and "connect to" in result.text


# -- a real Dovecot ---------------------------------------------------------------

@pytest.fixture(scope="module")
def real_dovecot() -> Iterator[dovecot_helper.Dovecot]:
    why = dovecot_helper.available()
    if why:
        pytest.skip(why)
    server = dovecot_helper.start_dovecot({"alice": "secret", "bob": "hunter2"})
    yield server
    dovecot_helper.remove(server)


def test_real_dovecot(real_dovecot: dovecot_helper.Dovecot) -> None:
    async def main() -> list[AuthResult]:
        backend = DovecotBackend(real_dovecot.socket_path, timeout=15)
        try:
            results = [await backend.authenticate("alice", "secret", CLIENT)]
            results += await asyncio.gather(backend.authenticate("bob", "hunter2", CLIENT),
                                            backend.authenticate("alice", "secret", CLIENT))
            # failures last: Dovecot delays later answers to this address (its penalty)
            results += [await backend.authenticate("alice", "wrong", CLIENT),
                        await backend.authenticate("nobody", "secret", CLIENT)]
            return results
        finally:
            await backend.close()

    ok, bob, again, wrong, unknown = asyncio.run(main())
    assert ok == AuthResult(True, "alice")
    assert bob.ok and bob.username == "bob" and again.ok
    assert not wrong.ok and not wrong.temporary_failure
    assert not unknown.ok and not unknown.temporary_failure
    assert "secret" not in real_dovecot.log() and "hunter2" not in real_dovecot.log()
