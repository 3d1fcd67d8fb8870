"""One milter connection: connect, negotiate, send events, read replies.

Where it sits in the mail path: smtpd opens one :class:`Milter` per
``smtpd_milters`` entry and SMTP session (through
:class:`postpy.milter.chain.MilterChain`) and sends it the session's
events as they happen; the packets themselves are
:mod:`postpy.milter.protocol`.

Sockets: ``inet:host:port`` (also ``inet:[addr]:port`` and
``inet:port@host``, Sendmail's order), ``unix:/path`` (``local:/path``).
Time limits: ``milter_connect_timeout`` for connecting and negotiating,
``milter_command_timeout`` for each command's reply,
``milter_content_timeout`` for header, body and end-of-message replies.

Macros: before each command that has a macro stage, one ``SMFIC_MACRO``
packet carries the values of that stage's names -- the milter's own list
when it asked for one at negotiation, else the configured
``milter_*_macros`` list.  Names without a value are left out.

Every failure -- refused connection, timeout, EOF, a packet that does not
parse, a reply not allowed where it came -- raises :class:`MilterError`;
the chain turns it into ``milter_default_action``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.milter import protocol as p


class MilterError(Exception):
    """The milter is down, slow or speaks nonsense; str() says which."""


@dataclass
class MilterSettings:
    """What every milter of a chain shares (from main.cf)."""

    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0
    # protocol command -> macro names sent before it (milter_*_macros)
    macros: dict[bytes, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Response:
    """A command's outcome: the final reply, and the modification requests
    that came before it (end of message only)."""

    final: p.Reply
    modifications: list[p.Reply] = field(default_factory=list)


CONTINUE = Response(p.Reply(p.SMFIR_CONTINUE))
MACRO_NAME = {cmd: stage for stage, cmd in p.MACRO_STAGES.items()}
CONTENT_COMMANDS = frozenset({p.SMFIC_HEADER, p.SMFIC_EOH, p.SMFIC_BODY, p.SMFIC_BODYEOB})


def parse_spec(spec: str) -> tuple[str, str, int]:
    """``inet:host:port`` -> ("inet", host, port); ``unix:/path`` -> ("unix", path, 0)."""
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if not sep or not rest:
        raise ValueError(f"milter {spec!r}: use inet:host:port or unix:/path")
    if kind in ("unix", "local"):
        return "unix", rest, 0
    if kind not in ("inet", "inet6"):
        raise ValueError(f"milter {spec!r}: unknown socket type {kind}")
    if "@" in rest:                      # Sendmail's inet:port@host
        port_text, _, host = rest.partition("@")
    else:
        host, _, port_text = rest.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"milter {spec!r}: bad port")
    return "inet", host, int(port_text)


class Milter:
    def __init__(self, spec: str, settings: MilterSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.negotiated: p.Negotiated | None = None
        self.skip_body = False           # the milter said SMFIR_SKIP for this message

    def __repr__(self) -> str:
        return f"milter {self.spec}"

    # -- connection --------------------------------------------------------------
    async def open(self) -> None:
        kind, where, port = parse_spec(self.spec)
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                if kind == "unix":
                    self.reader, self.writer = await asyncio.open_unix_connection(where)
                else:
                    self.reader, self.writer = await asyncio.open_connection(where, port)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise MilterError(f"{self}: connect: {exc or type(exc).__name__}") from None
        await self.negotiate(self.reader, self.writer)

    async def negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """SMFIC_OPTNEG on an open connection (tests pass a socketpair)."""
        self.reader, self.writer = reader, writer
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                self.writer.write(p.optneg())
                await self.writer.drain()
                command, data = await self._read_packet()
        except (OSError, TimeoutError, EOFError) as exc:
            self.close()
            raise MilterError(f"{self}: negotiation: {exc or type(exc).__name__}") from None
        if command != p.SMFIC_OPTNEG:
            self.close()
            raise MilterError(f"{self}: negotiation answered with {command!r}")
        try:
            self.negotiated = p.parse_optneg(data)
        except p.MilterProtocolError as exc:
            self.close()
            raise MilterError(f"{self}: {exc}") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    @property
    def connected(self) -> bool:
        return self.writer is not None and self.negotiated is not None

    async def _read_packet(self) -> tuple[bytes, bytes]:
        assert self.reader is not None
        try:
            length = p.packet_length(await self.reader.readexactly(4))
            frame = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise EOFError("connection closed by milter") from None
        except p.MilterProtocolError as exc:
            raise MilterError(f"{self}: {exc}") from None
        return frame[:1], frame[1:]

    # -- events --------------------------------------------------------------
    def wants(self, command: bytes) -> bool:
        neg = self.negotiated
        if neg is None:
            return False
        if command == p.SMFIC_BODY and self.skip_body:
            return False
        return not neg.skips(command)

    def macro_packet(self, command: bytes, lookup: Callable[[str], str | None]) -> bytes:
        stage = MACRO_NAME.get(command)
        if stage is None:
            return b""
        assert self.negotiated is not None
        names = self.negotiated.macros.get(stage)
        if names is None:
            names = list(self.settings.macros.get(command, ()))
        values = {}
        for name in names:
            value = lookup(name.strip("{}"))
            if value is not None:
                values[name] = value
        return p.macro(command, values) if values else b""

    async def command(self, command: bytes, packet: bytes,
                      lookup: Callable[[str], str | None] = lambda name: None) -> Response:
        """Send one event (with its macros) and read the reply; CONTINUE for
        a step the milter declined or asked not to answer."""
        if not self.wants(command) and command not in (p.SMFIC_BODYEOB, p.SMFIC_ABORT,
                                                       p.SMFIC_QUIT):
            return CONTINUE
        neg = self.negotiated
        if self.writer is None or neg is None:
            raise MilterError(f"{self}: not connected")
        content = command in CONTENT_COMMANDS
        timeout = self.settings.content_timeout if content else self.settings.command_timeout
        try:
            async with asyncio.timeout(timeout) as limit:
                self.writer.write(self.macro_packet(command, lookup) + packet)
                await self.writer.drain()
                if command in (p.SMFIC_ABORT, p.SMFIC_QUIT, p.SMFIC_QUIT_NC) or neg.no_reply(command):
                    if command == p.SMFIC_ABORT:
                        self.skip_body = False
                    return CONTINUE
                return await self._response(command, limit, timeout)
        except (OSError, TimeoutError, EOFError) as exc:
            self.close()
            raise MilterError(f"{self}: {exc or type(exc).__name__} "
                              f"after {command.decode()}") from None

    async def _response(self, command: bytes, limit: asyncio.Timeout, timeout: float) -> Response:
        assert self.negotiated is not None
        mods: list[p.Reply] = []
        while True:
            code, data = await self._read_packet()
            try:
                reply = p.parse_reply(code, data)
            except p.MilterProtocolError as exc:
                self.close()
                raise MilterError(f"{self}: {exc} after {command.decode()}") from None
            if reply.command == p.SMFIR_PROGRESS:       # still working: the time limit starts over
                limit.reschedule(asyncio.get_running_loop().time() + timeout)
                continue
            if reply.command in p.MODIFICATIONS:
                if command != p.SMFIC_BODYEOB or not self.negotiated.allows(reply.command):
                    self.close()
                    raise MilterError(f"{self}: {reply.command.decode()} not allowed "
                                      f"after {command.decode()}")
                mods.append(reply)
                continue
            if reply.command == p.SMFIR_SKIP:
                if command != p.SMFIC_BODY:
                    self.close()
                    raise MilterError(f"{self}: SKIP after {command.decode()}")
                self.skip_body = True
                return CONTINUE
            if command == p.SMFIC_BODYEOB:
                self.skip_body = False
            return Response(reply, mods)
