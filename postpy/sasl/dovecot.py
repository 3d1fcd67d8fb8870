"""A client of Dovecot's authentication socket (``smtpd_sasl_type = dovecot``).

smtpd asks Dovecot's auth process whether a username and password are
right, over the unix socket ``smtpd_sasl_path`` (``private/auth``: relative
paths are relative to the queue directory, smtpd's working directory, so
the socket is reachable from a chroot; an absolute path is used as is).
Dovecot's side is a ``service auth { unix_listener ... }`` in its config.

The protocol is Dovecot's auth client protocol, version 1 (a line-based
protocol: fields separated by TAB, lines ended by LF, values "tab-escaped"
with \\001 as the escape character)::

    C: VERSION 1 1          C: CPID <our pid>
    S: VERSION 1 <minor>    S: MECH PLAIN plaintext ... S: SPID, CUID, COOKIE
    S: DONE
    C: AUTH <id> PLAIN service=smtp nologin lip=.. rip=.. [secured] resp=<base64>
    S: OK <id> user=<canonical name> ...    (or)
    S: FAIL <id> [user=..] [reason=..] [temp] [code=temp_fail]
    S: CONT <id> <base64>   (a further challenge; never expected for PLAIN+resp)

The SASL exchange with the SMTP client is done in smtpd
(:mod:`postpy.sasl.mechanisms`); whatever mechanism the client used, smtpd
passes the credentials to Dovecot as one PLAIN initial response, so
Dovecot only has to offer PLAIN.  ``secured`` tells Dovecot the SMTP
session is under TLS (its ``disable_plaintext_auth`` honours it).

One connection per smtpd process, opened at the first AUTH and reused;
requests from concurrent sessions are told apart by their id.  A lost
connection fails the requests in flight as temporary failures and is
re-opened by the next request.  Dovecot delays FAIL replies on purpose
(``auth_failure_delay``), so a request waits up to ``timeout`` seconds.
The password travels only inside ``resp=`` on the socket; no line is logged.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.sasl.backend import AuthResult, ClientInfo

MAJOR_VERSION = 1
MAX_LINE = 65536


class DovecotError(Exception):
    """The auth server cannot be reached or spoke out of protocol."""


_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}
_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\x00", "l": "\n"}


def escape(value: str) -> str:
    """Dovecot's tab-escaping of one field."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\x01":
            nxt = next(chars, "")
            out.append(_UNESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Reply:
    verb: str                       # OK | FAIL | CONT
    request_id: int
    params: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    data: str = ""                  # CONT's challenge


def parse_reply(line: str) -> Reply | None:
    """An OK/FAIL/CONT line, or None for any other line (ignored)."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 2 or fields[0] not in ("OK", "FAIL", "CONT") or not fields[1].isdigit():
        return None
    reply = Reply(fields[0], int(fields[1]))
    if reply.verb == "CONT":
        reply.data = fields[2] if len(fields) > 2 else ""
        return reply
    for item in fields[2:]:
        name, sep, value = item.partition("=")
        if sep:
            reply.params[name] = unescape(value)
        elif name:
            reply.flags.add(name)
    return reply


def auth_line(request_id: int, service: str, username: str, password: str,
              client: ClientInfo) -> bytes:
    """The AUTH request for one username/password check (PLAIN, no authzid)."""
    blob = b"\x00" + username.encode("utf-8") + b"\x00" + password.encode("utf-8")
    fields = ["AUTH", str(request_id), "PLAIN", f"service={escape(service)}", "nologin"]
    for name, value in (("lip", client.server_addr), ("rip", client.addr),
                        ("lport", client.server_port), ("rport", client.port)):
        if value:
            fields.append(f"{name}={escape(value)}")
    if client.tls:
        fields.append("secured")
    fields.append("resp=" + base64.b64encode(blob).decode("ascii"))
    return ("\t".join(fields) + "\n").encode("utf-8")


class _Connection:
    """One handshaken connection and its reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.mechanisms: dict[str, set[str]] = {}
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.next_id = 1
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    async def handshake(self, timeout: float) -> None:
        self.writer.write(f"VERSION\t{MAJOR_VERSION}\t1\nCPID\t{os.getpid()}\n".encode("ascii"))
        async with asyncio.timeout(timeout):
            await self.writer.drain()
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    raise DovecotError("connection closed during the handshake")
                fields = line.decode("utf-8", "replace").rstrip("\n").split("\t")
                if fields[0] == "VERSION":
                    if len(fields) < 2 or fields[1] != str(MAJOR_VERSION):
                        raise DovecotError(f"unsupported protocol version {'.'.join(fields[1:])}")
                elif fields[0] == "MECH" and len(fields) > 1:
                    self.mechanisms[fields[1].upper()] = set(fields[2:])
                elif fields[0] == "DONE":
                    break
        if "PLAIN" not in self.mechanisms:
            raise DovecotError("the auth server does not offer the PLAIN mechanism "
                               "(add plain to Dovecot's auth_mechanisms)")
        self.task = asyncio.get_running_loop().create_task(self._read_replies())

    async def _read_replies(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    break
                reply = parse_reply(line.decode("utf-8", "surrogateescape"))
                if reply is None:
                    continue
                future = self.pending.pop(reply.request_id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self.fail_all("connection to the auth server closed")

    def fail_all(self, text: str) -> None:
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(DovecotError(text))
        self.pending.clear()

    async def request(self, line_for_id: Callable[[int], bytes], timeout: float) -> Reply:
        request_id = self.next_id
        self.next_id += 1
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            self.writer.write(line_for_id(request_id))
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                return await future
        except TimeoutError:
            raise DovecotError(f"no answer from the auth server in {timeout:g}s") from None
        except OSError as exc:
            self.fail_all(str(exc))
            raise DovecotError(f"write to the auth server: {exc}") from None
        finally:
            self.pending.pop(request_id, None)

    async def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class DovecotBackend:
    name = "dovecot"

    def __init__(self, path: str, *, service: str = "smtp", timeout: float = 60.0,
                 connect_timeout: float = 10.0) -> None:
        self.path = path
        self.service = service
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._lock: asyncio.Lock | None = None

    async def _connection(self) -> _Connection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
            except TimeoutError:
                raise DovecotError(f"connect to {self.path}: timed out") from None
            except OSError as exc:
                raise DovecotError(f"connect to {self.path}: {exc.strerror or exc}") from None
            conn = _Connection(reader, writer)
            try:
                await conn.handshake(self.connect_timeout)
            except (DovecotError, TimeoutError, OSError, ValueError) as exc:
                await conn.close()
                text = str(exc) or "timed out"
                raise DovecotError(f"{self.path}: {text}") from None
            self._conn = conn
            return conn

    async def authenticate(self, username: str, password: str, client: ClientInfo) -> AuthResult:
        if "\x00" in username or "\x00" in password:
            return AuthResult.failure("NUL in credentials")
        try:
            conn = await self._connection()
            reply = await conn.request(
                lambda rid: auth_line(rid, self.service, username, password, client), self.timeout)
        except DovecotError as exc:
            return AuthResult.temporary(f"SASL dovecot: {exc}")
        if reply.verb == "OK":
            return AuthResult.success(reply.params.get("user") or username)
        if reply.verb == "CONT":
            return AuthResult.temporary("SASL dovecot: unexpected challenge to a PLAIN response")
        reason = reply.params.get("reason", "")
        if "temp" in reply.flags or reply.params.get("code") == "temp_fail":
            return AuthResult.temporary(f"SASL dovecot: {reason or 'temporary failure'}")
        return AuthResult.failure(reason or "authentication failure")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
