"""The milter protocol (postpy.milter.protocol), one milter connection
(client) and the chain, against a small milter written here that speaks
the protocol over a socketpair."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from postpy.milter import protocol as p
from postpy.milter.chain import Edits, MilterChain, Outcome
from postpy.milter.client import Milter, MilterSettings, parse_spec

Script = Callable[[bytes, bytes], list[bytes]]


# -- packets ------------------------------------------------------------------------

def split(packet: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack(">I", packet[:4])
    assert length == len(packet) - 4
    return packet[4:5], packet[5:]


@pytest.mark.parametrize(("packet", "command", "data"), [
    (p.optneg(), p.SMFIC_OPTNEG, struct.pack(">III", 6, p.ALL_ACTIONS, p.ALL_STEPS)),
    (p.connect("mx.example", p.SMFIA_INET, 25, "192.0.2.1"), p.SMFIC_CONNECT,
     b"mx.example\0" + b"4" + b"\x00\x19" + b"192.0.2.1\0"),
    (p.connect("unknown"), p.SMFIC_CONNECT, b"unknown\0U"),
    (p.helo("client.example"), p.SMFIC_HELO, b"client.example\0"),
    (p.mail("a@b.example", ["SIZE=10"]), p.SMFIC_MAIL, b"<a@b.example>\0SIZE=10\0"),
    (p.rcpt("c@d.example"), p.SMFIC_RCPT, b"<c@d.example>\0"),
    (p.header("Subject", "hi"), p.SMFIC_HEADER, b"Subject\0hi\0"),
    (p.body(b"line\r\n"), p.SMFIC_BODY, b"line\r\n"),
    (p.unknown("XYZZY"), p.SMFIC_UNKNOWN, b"XYZZY\0"),
    (p.macro(p.SMFIC_MAIL, {"i": "ABC", "{mail_addr}": "a@b"}), p.SMFIC_MACRO,
     b"Mi\0ABC\0{mail_addr}\0a@b\0"),
    *[(p.simple(c), c, b"") for c in (p.SMFIC_DATA, p.SMFIC_EOH, p.SMFIC_BODYEOB, p.SMFIC_ABORT,
                                      p.SMFIC_QUIT, p.SMFIC_QUIT_NC)],
])
def test_commands_encode(packet: bytes, command: bytes, data: bytes) -> None:
    assert split(packet) == (command, data)


REPLIES = [
    p.Reply(p.SMFIR_ACCEPT), p.Reply(p.SMFIR_CONTINUE), p.Reply(p.SMFIR_DISCARD),
    p.Reply(p.SMFIR_REJECT), p.Reply(p.SMFIR_TEMPFAIL), p.Reply(p.SMFIR_PROGRESS),
    p.Reply(p.SMFIR_SKIP), p.Reply(p.SMFIR_SHUTDOWN), p.Reply(p.SMFIR_CONN_FAIL),
    p.Reply(p.SMFIR_REPLYCODE, ("550 5.7.1 go away",)),
    p.Reply(p.SMFIR_ADDRCPT, ("<x@y>",)), p.Reply(p.SMFIR_DELRCPT, ("<x@y>",)),
    p.Reply(p.SMFIR_ADDRCPT_PAR, ("<x@y>", "NOTIFY=NEVER")), p.Reply(p.SMFIR_CHGFROM, ("<s@y>",)),
    p.Reply(p.SMFIR_ADDHEADER, ("X-A", "1")), p.Reply(p.SMFIR_INSHEADER, ("X-B", "2"), index=3),
    p.Reply(p.SMFIR_CHGHEADER, ("Subject", ""), index=1), p.Reply(p.SMFIR_QUARANTINE, ("why",)),
    p.Reply(p.SMFIR_REPLBODY, data=b"new\r\nbody\r\n"),
]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: r.command.decode())
def test_replies_round_trip(reply: p.Reply) -> None:
    command, data = split(p.encode_reply(reply))
    assert p.parse_reply(command, data) == reply


@pytest.mark.parametrize(("command", "data"), [
    (p.SMFIR_ADDHEADER, b"X-A\0"),                 # one string of two
    (p.SMFIR_ADDHEADER, b"X-A\0v"),                # not NUL-terminated
    (p.SMFIR_CHGHEADER, b"\0\0"),                  # no index
    (p.SMFIR_REPLYCODE, b""),
    (p.SMFIR_CHGFROM, b"a\0b\0c\0"),
    (b"Z", b""),                                   # unknown reply
    (p.SMFIR_SETSYMLIST, b"x\0"),
])
def test_malformed_replies(command: bytes, data: bytes) -> None:
    with pytest.raises(p.MilterProtocolError):
        p.parse_reply(command, data)


def test_negotiation_reply() -> None:
    _, data = split(p.optneg_reply(6, p.SMFIF_ADDHDRS, p.SMFIP_NOHELO | p.SMFIP_NR_RCPT,
                                   {p.SMFIM_ENVFROM: "{mail_addr} i"}))
    neg = p.parse_optneg(data)
    assert neg.skips(p.SMFIC_HELO) and not neg.skips(p.SMFIC_MAIL)
    assert neg.no_reply(p.SMFIC_RCPT) and not neg.no_reply(p.SMFIC_MAIL)
    assert neg.allows(p.SMFIR_ADDHEADER) and not neg.allows(p.SMFIR_CHGHEADER)
    assert neg.macros == {p.SMFIM_ENVFROM: ["{mail_addr}", "i"]}
    for bad in (b"\0\0\0\x06", struct.pack(">III", 7, 0, 0), struct.pack(">III", 6, 0x200, 0),
                struct.pack(">III", 6, 0, 0x40000000), struct.pack(">III", 6, 0, 0) + b"\0\0\0\x09x\0"):
        with pytest.raises(p.MilterProtocolError):
            p.parse_optneg(bad)


def test_replycode() -> None:
    assert p.parse_replycode("550 5.7.1 no") == (550, "5.7.1 no")
    assert p.parse_replycode("451-4.7.1 one\r\n451 4.7.1 two") == (451, "4.7.1 one 4.7.1 two")
    for bad in ("250 ok", "55 x", "abc"):
        with pytest.raises(p.MilterProtocolError):
            p.parse_replycode(bad)


def test_specs() -> None:
    assert parse_spec("inet:127.0.0.1:8891") == ("inet", "127.0.0.1", 8891)
    assert parse_spec("inet:8891@localhost") == ("inet", "localhost", 8891)
    assert parse_spec("inet:[::1]:8891") == ("inet", "::1", 8891)
    assert parse_spec("unix:/run/x.sock") == ("unix", "/run/x.sock", 0)
    for bad in ("inet:host", "tcp:1:2", "unix:", "inet:h:99999"):
        with pytest.raises(ValueError):
            parse_spec(bad)


# -- a milter on a socketpair -----------------------------------------------------

class StubMilter:
    """Answers OPTNEG with ``negotiation`` and everything else through ``script``;
    records what it received."""

    def __init__(self, script: Script, negotiation: bytes | None = None) -> None:
        self.script = script
        self.negotiation = negotiation or p.optneg_reply(6, p.ALL_ACTIONS, 0)
        self.seen: list[tuple[bytes, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = struct.unpack(">I", await reader.readexactly(4))[0]
                frame = await reader.readexactly(length)
                command, data = frame[:1], frame[1:]
                self.seen.append((command, data))
                out = [self.negotiation] if command == p.SMFIC_OPTNEG else self.script(command, data)
                for packet in out:
                    writer.write(packet)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def commands(self) -> bytes:
        return b"".join(c for c, _ in self.seen)


def cont(command: bytes, data: bytes) -> list[bytes]:
    return [] if command in (p.SMFIC_MACRO, p.SMFIC_ABORT, p.SMFIC_QUIT) else [p.encode_reply(p.Reply(p.SMFIR_CONTINUE))]


async def chain_with(*milters: StubMilter, default_action: str = "tempfail",
                     timeout: float = 2.0) -> tuple[MilterChain, list[asyncio.Task[None]]]:
    settings = MilterSettings(connect_timeout=timeout, command_timeout=timeout, content_timeout=timeout,
                              macros={p.SMFIC_MAIL: ("i", "{mail_addr}")})
    chain = MilterChain([f"unix:/test/{n}" for n in range(len(milters))], settings, default_action)
    tasks = []
    for milter, test in zip(chain.milters, milters, strict=True):
        a, b = socket.socketpair()
        tasks.append(asyncio.create_task(test.serve(*await asyncio.open_connection(sock=b))))
        try:
            await milter.negotiate(*await asyncio.open_connection(sock=a))
        except Exception:
            pass        # negotiation failures are the chain's to handle at connect
    return chain, tasks


async def transaction(chain: MilterChain, body: bytes = b"hello\r\n") -> tuple[str, Edits]:
    """connect .. end of message; the first verdict other than continue, as
    "action code text", and the edits."""
    steps: list[Callable[[], Awaitable[Outcome]]] = [
        lambda: chain.connect("client.example", b"4", 1234, "192.0.2.1"),
        lambda: chain.helo("client.example"), lambda: chain.mail("a@b.example", []),
        lambda: chain.rcpt("c@d.example", []), chain.data, lambda: chain.header("Subject", "test"),
        chain.eoh, lambda: chain.body(body)]
    edits = Edits()
    steps.append(lambda: chain.eom(edits))
    for step in steps:
        outcome = await step()
        if outcome.action != "continue":
            return f"{outcome.action} {outcome.code} {outcome.text}", edits
    return "continue", edits


def run(coro_factory: Callable[[], object]) -> object:
    return asyncio.run(coro_factory())  # type: ignore[arg-type]


def test_every_event_and_macros() -> None:
    test = StubMilter(cont)

    async def go() -> None:
        chain, tasks = await chain_with(test)
        chain.macros.update({"i": "QID1", "mail_addr": "a@b.example"})
        assert (await transaction(chain))[0] == "continue"
        await chain.quit()
        await asyncio.wait_for(tasks[0], 2)
    run(go)
    assert test.commands() == b"OCHDMRTLNBEQ"
    assert (p.SMFIC_MACRO, b"Mi\0QID1\0{mail_addr}\0a@b.example\0") in test.seen


def test_declined_and_no_reply_steps_are_skipped() -> None:
    steps = p.SMFIP_NOHELO | p.SMFIP_NOHDRS | p.SMFIP_NR_RCPT | p.SMFIP_NOBODY

    def script(command: bytes, data: bytes) -> list[bytes]:
        return [] if command == p.SMFIC_RCPT else cont(command, data)
    test = StubMilter(script, p.optneg_reply(6, 0, steps))

    async def go() -> str:
        chain, _ = await chain_with(test)
        return (await transaction(chain))[0]
    assert run(go) == "continue"
    assert test.commands() == b"OCMRTNE"


def test_modifications_at_end_of_message() -> None:
    mods = [p.Reply(p.SMFIR_ADDHEADER, ("X-Added", "yes")), p.Reply(p.SMFIR_INSHEADER, ("X-Top", "1"), index=0),
            p.Reply(p.SMFIR_CHGHEADER, ("Subject", "new"), index=1), p.Reply(p.SMFIR_CHGFROM, ("<s@new>",)),
            p.Reply(p.SMFIR_ADDRCPT, ("<r1@x>",)), p.Reply(p.SMFIR_ADDRCPT_PAR, ("<r2@x>", "NOTIFY=NEVER")),
            p.Reply(p.SMFIR_DELRCPT, ("<c@d.example>",)), p.Reply(p.SMFIR_REPLBODY, data=b"a\r\n"),
            p.Reply(p.SMFIR_REPLBODY, data=b"b\r\n"), p.Reply(p.SMFIR_QUARANTINE, ("looks odd",)),
            p.Reply(p.SMFIR_PROGRESS)]

    def script(command: bytes, data: bytes) -> list[bytes]:
        if command == p.SMFIC_BODYEOB:
            return [p.encode_reply(m) for m in mods] + [p.encode_reply(p.Reply(p.SMFIR_ACCEPT))]
        return cont(command, data)

    async def go() -> tuple[str, Edits]:
        chain, _ = await chain_with(StubMilter(script))
        return await transaction(chain)
    action, edits = run(go)  # type: ignore[misc]
    assert action == "continue"
    msg = edits.message()
    assert [(h.op, h.name, h.value, h.index) for h in msg.headers] == [
        ("add", "X-Added", " yes", 0), ("insert", "X-Top", " 1", 0), ("change", "Subject", " new", 1)]
    assert msg.sender == "s@new"
    assert [(r.address, r.notify) for r in msg.add_recipients] == [("r1@x", ""), ("r2@x", "NEVER")]
    assert msg.delete_recipients == ["c@d.example"]
    assert edits.body == b"a\nb\n" and msg.replace_body
    assert msg.hold == "looks odd"


@pytest.mark.parametrize(("final", "expected"), [
    (p.Reply(p.SMFIR_REJECT), "reject 550 5.7.1 Command rejected"),
    (p.Reply(p.SMFIR_TEMPFAIL), "tempfail 451 4.7.1 Service unavailable - try again later"),
    (p.Reply(p.SMFIR_REPLYCODE, ("554 5.7.1 spam detected",)), "reject 554 5.7.1 spam detected"),
    (p.Reply(p.SMFIR_REPLYCODE, ("452 4.3.1 later",)), "tempfail 452 4.3.1 later"),
    (p.Reply(p.SMFIR_DISCARD), "discard 0 "),
])
def test_end_of_message_verdicts(final: p.Reply, expected: str) -> None:
    def script(command: bytes, data: bytes) -> list[bytes]:
        return [p.encode_reply(final)] if command == p.SMFIC_BODYEOB else cont(command, data)

    async def go() -> str:
        chain, _ = await chain_with(StubMilter(script))
        return (await transaction(chain))[0]
    assert run(go) == expected


def test_first_milter_rejecting_stops_the_chain() -> None:
    second = StubMilter(cont)

    def reject_rcpt(command: bytes, data: bytes) -> list[bytes]:
        return [p.encode_reply(p.Reply(p.SMFIR_REJECT))] if command == p.SMFIC_RCPT else cont(command, data)

    async def go() -> str:
        chain, _ = await chain_with(StubMilter(reject_rcpt), second)
        return (await transaction(chain))[0]
    assert run(go) == "reject 550 5.7.1 Command rejected"
    assert second.commands() == b"OCHM"


BROKEN: list[tuple[str, Script]] = [
    ("garbage length", lambda c, d: [b"\xff\xff\xff\xff"] if c == p.SMFIC_MAIL else cont(c, d)),
    ("zero length", lambda c, d: [b"\0\0\0\0"] if c == p.SMFIC_MAIL else cont(c, d)),
    ("unknown reply", lambda c, d: [p.packet(b"Z")] if c == p.SMFIC_MAIL else cont(c, d)),
    ("modification too early", lambda c, d: [p.encode_reply(p.Reply(p.SMFIR_ADDHEADER, ("X", "y")))]
     if c == p.SMFIC_MAIL else cont(c, d)),
    ("bad header", lambda c, d: [p.packet(p.SMFIR_ADDHEADER, b"X\0")] if c == p.SMFIC_BODYEOB else cont(c, d)),
    ("bad reply code", lambda c, d: [p.encode_reply(p.Reply(p.SMFIR_REPLYCODE, ("250 fine",)))]
     if c == p.SMFIC_BODYEOB else cont(c, d)),
    ("skip outside body", lambda c, d: [p.encode_reply(p.Reply(p.SMFIR_SKIP))] if c == p.SMFIC_HELO else cont(c, d)),
    ("silence", lambda c, d: [] if c == p.SMFIC_RCPT else cont(c, d)),
]


@pytest.mark.parametrize("script", [s for _, s in BROKEN], ids=[n for n, _ in BROKEN])
@pytest.mark.parametrize(("action", "expected"), [
    ("tempfail", "tempfail 451 4.7.1 Service unavailable - try again later"),
    ("reject", "reject 550 5.7.1 Command rejected"),
    ("accept", "continue"), ("quarantine", "continue")])
def test_nonsense_gets_the_default_action(script: Script, action: str, expected: str) -> None:
    async def go() -> tuple[str, Edits]:
        chain, _ = await chain_with(StubMilter(script), default_action=action, timeout=0.3)
        return await transaction(chain)
    outcome, edits = run(go)  # type: ignore[misc]
    assert outcome == expected
    if action == "quarantine":
        assert edits.hold


def test_bad_negotiation_and_down_milter() -> None:
    test = StubMilter(cont, p.optneg_reply(6, 0x400, 0))     # an action never offered

    async def go() -> str:
        chain, _ = await chain_with(test)
        chain.milters.append(Milter("unix:/nonexistent/milter.sock", chain.milters[0].settings))
        return (await transaction(chain))[0]
    assert run(go) == "tempfail 451 4.7.1 Service unavailable - try again later"


def test_accept_leaves_the_milter_out() -> None:
    def accept_mail(command: bytes, data: bytes) -> list[bytes]:
        return [p.encode_reply(p.Reply(p.SMFIR_ACCEPT))] if command == p.SMFIC_MAIL else cont(command, data)
    test = StubMilter(accept_mail)

    async def go() -> str:
        chain, _ = await chain_with(test)
        return (await transaction(chain))[0]
    assert run(go) == "continue"
    assert test.commands() == b"OCHM"


def test_body_in_chunks_and_skip() -> None:
    def skip_body(command: bytes, data: bytes) -> list[bytes]:
        return [p.encode_reply(p.Reply(p.SMFIR_SKIP))] if command == p.SMFIC_BODY else cont(command, data)
    test = StubMilter(skip_body, p.optneg_reply(6, 0, p.SMFIP_SKIP))

    async def go() -> str:
        chain, _ = await chain_with(test)
        return (await transaction(chain, body=b"x" * (3 * p.CHUNK)))[0]
    assert run(go) == "continue"
    assert test.commands().count(p.SMFIC_BODY) == 1     # skipped after the first chunk

    plain = StubMilter(cont)

    async def go2() -> str:
        chain, _ = await chain_with(plain)
        return (await transaction(chain, body=b"x" * (2 * p.CHUNK + 1)))[0]
    assert run(go2) == "continue"
    assert [len(d) for c, d in plain.seen if c == p.SMFIC_BODY] == [p.CHUNK, p.CHUNK, 1]
