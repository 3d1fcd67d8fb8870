"""check_policy_service: delegate a decision to a policy server (SMTPD_POLICY_README).

The protocol: smtpd sends ``name=value`` lines, one per attribute, ended by
an empty line; the server answers ``action=...`` and an empty line.  The
action is an access(5) result (``DUNNO``, ``DEFER_IF_PERMIT text``,
``REJECT text``, ``PREPEND header``, ...), interpreted by
:func:`postpy.smtpd.access.interpret`.  Attributes sent (empty ones too,
as Postfix does): ``request=smtpd_access_policy``, ``protocol_state``,
``protocol_name``, ``helo_name``, ``queue_id``, ``sender``, ``recipient``,
``recipient_count``, ``client_address``, ``client_name``,
``reverse_client_name``, ``instance``, ``sasl_method``, ``sasl_username``,
``sasl_sender``, ``size``, ``ccert_subject``, ``ccert_issuer``,
``ccert_fingerprint``, ``ccert_pubkey_fingerprint``,
``encryption_protocol``, ``encryption_cipher``, ``encryption_keysize``,
``etrn_domain``, ``stress``, ``client_port``, ``policy_context``,
``server_address``, ``server_port``, ``compatibility_level``,
``mail_version``.

Servers: ``inet:host:port`` or ``unix:path`` (relative to the queue
directory, e.g. ``unix:private/policy``).  Connections are kept and reused
by every session of the process (:class:`PolicyClients`) and closed after
``smtpd_policy_service_max_idle`` unused or ``smtpd_policy_service_max_ttl``
of age.  A request that gets no answer within
``smtpd_policy_service_timeout``, a server that cannot be reached (after
``smtpd_policy_service_try_limit`` attempts) or an answer that is not
``action=...`` is logged as a warning and answered with
``smtpd_policy_service_default_action`` (``451 4.3.5 Server configuration
problem``): never an accepted message that the server would have refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from postpy.util import maillog

MAX_ANSWER = 8192           # bytes of one answer line
ATTRIBUTES = (
    "request", "protocol_state", "protocol_name", "helo_name", "queue_id", "sender",
    "recipient", "recipient_count", "client_address", "client_name", "reverse_client_name",
    "instance", "sasl_method", "sasl_username", "sasl_sender", "size", "ccert_subject",
    "ccert_issuer", "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "etrn_domain", "stress", "client_port",
    "policy_context", "server_address", "server_port", "compatibility_level", "mail_version",
)


class PolicyError(Exception):
    """No usable answer; str() says why, for the warning."""


@dataclass
class PolicySettings:
    timeout: float = 100.0
    max_idle: float = 300.0
    max_ttl: float = 1000.0
    try_limit: int = 2
    retry_delay: float = 1.0
    default_action: str = "451 4.3.5 Server configuration problem"
    policy_context: str = ""


def encode(attrs: Mapping[str, str]) -> bytes:
    """The request: every attribute of :data:`ATTRIBUTES` (empty when not given),
    values cleaned of line breaks."""
    lines = []
    for name in ATTRIBUTES:
        value = attrs.get(name, "")
        lines.append(f"{name}={value.replace(chr(10), ' ').replace(chr(13), ' ')}")
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def parse_answer(lines: list[bytes]) -> str:
    """The action of an answer (its lines without the final empty one)."""
    action = None
    for raw in lines:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        name, eq, value = text.partition("=")
        if not eq:
            raise PolicyError(f"malformed answer line \"{text[:100]}\"")
        if name == "action":
            action = value.strip()
    if not action:
        raise PolicyError("answer without action=")
    return action


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    born: float
    used: float

    def close(self) -> None:
        self.writer.close()


@dataclass
class PolicyClient:
    """The connections to one policy server."""

    endpoint: str
    settings: PolicySettings
    idle: list[_Conn] = field(default_factory=list)

    async def _connect(self) -> _Conn:
        kind, _, where = self.endpoint.partition(":")
        async with asyncio.timeout(self.settings.timeout):
            if kind == "unix":
                reader, writer = await asyncio.open_unix_connection(where, limit=MAX_ANSWER * 2)
            elif kind == "inet":
                host, _, port = where.rpartition(":")
                host = host.strip("[]")
                if not host or not port.isdigit():
                    raise PolicyError(f"bad server address \"{self.endpoint}\"")
                reader, writer = await asyncio.open_connection(host, int(port), limit=MAX_ANSWER * 2)
            else:
                raise PolicyError(f"unsupported server type \"{self.endpoint}\" (inet: or unix:)")
        now = time.monotonic()
        return _Conn(reader, writer, now, now)

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.used < self.settings.max_idle and now - conn.born < self.settings.max_ttl \
                    and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _exchange(self, conn: _Conn, request: bytes) -> str:
        conn.writer.write(request)
        async with asyncio.timeout(self.settings.timeout):
            await conn.writer.drain()
            lines: list[bytes] = []
            while True:
                line = await conn.reader.readline()
                if not line:
                    raise PolicyError("connection closed by the server")
                if not line.endswith(b"\n"):
                    raise PolicyError("answer line too long")
                if line in (b"\n", b"\r\n"):
                    break
                lines.append(line)
                if len(lines) > 100:
                    raise PolicyError("answer too long")
        return parse_answer(lines)

    async def ask(self, attrs: Mapping[str, str]) -> str:
        """The action for one request; raises PolicyError."""
        request = encode(attrs)
        attempts = 0
        while True:
            conn = self._take()
            fresh = conn is None
            try:
                if conn is None:
                    attempts += 1
                    conn = await self._connect()
                action = await self._exchange(conn, request)
            except TimeoutError:
                if conn is not None:
                    conn.close()
                raise PolicyError(f"timeout after {self.settings.timeout:g}s") from None
            except (OSError, ValueError, asyncio.LimitOverrunError, PolicyError) as exc:
                if conn is not None:
                    conn.close()
                if not fresh:
                    continue            # a kept connection went stale: try a new one
                if not isinstance(exc, OSError) or attempts >= self.settings.try_limit:
                    raise PolicyError(str(exc) or type(exc).__name__) from None
                await asyncio.sleep(self.settings.retry_delay)
                continue
            conn.used = time.monotonic()
            self.idle.append(conn)
            return action


@dataclass
class PolicyClients:
    """Every policy server of the process, by endpoint."""

    settings: PolicySettings = field(default_factory=PolicySettings)
    clients: dict[str, PolicyClient] = field(default_factory=dict)

    async def ask(self, endpoint: str, attrs: Mapping[str, str]) -> str:
        """The action, or the default action after a logged warning."""
        client = self.clients.get(endpoint)
        if client is None:
            client = self.clients[endpoint] = PolicyClient(endpoint, self.settings)
        try:
            return await client.ask(attrs)
        except PolicyError as exc:
            maillog.warning(f"problem talking to server {endpoint}: {exc}")
            return self.settings.default_action
