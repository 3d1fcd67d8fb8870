"""The ipc frame codec and every message in postpy.ipc.messages."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import socket
import struct
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from postpy.ipc import codec, messages
from postpy.ipc.codec import (
    ATTRS,
    DATA,
    DEFAULT_MAX_FRAME,
    END,
    IpcError,
    decode,
    encode,
    encode_data,
    encode_end,
    expect,
    recv,
    recv_frame,
    send,
)
from postpy.ipc.messages import CleanupEnvelope, CleanupHello, CleanupResult, Rcpt

PEER = "peer-under-test"
TIMEOUT = 10.0

MESSAGE_CLASSES: list[Any] = [cls for _, cls in inspect.getmembers(messages, inspect.isclass)
                              if cls.__module__ == messages.__name__ and hasattr(cls, "ipc_type")]


def sample(hint: Any, variant: int) -> Any:
    """A value of the annotated type; variants differ so mix-ups show."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [sample(item, variant + i) for i in range(2)]
    if origin is dict:
        return {"k\u00e9y": "v\udcff", "x": str(variant)}
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in typing.get_args(hint) if a is not type(None)), variant)
    if dataclasses.is_dataclass(hint):
        return build(hint, variant)
    return {str: f"text {variant} caf\u00e9 \u4e2d \udc80\x00\n\"", int: 1000 + variant,
            float: variant + 0.5, bool: bool(variant % 2)}[hint]


def build(cls: Any, variant: int = 1) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name], variant + i) for i, f in enumerate(dataclasses.fields(cls))})


def split_frame(frame: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    return frame[4:5], frame[5:]


def test_every_message_class_is_registered() -> None:
    assert len(MESSAGE_CLASSES) >= 10
    names = [cls.ipc_type for cls in MESSAGE_CLASSES]
    assert len(names) == len(set(names))
    for cls in MESSAGE_CLASSES:
        assert "type" not in {f.name for f in dataclasses.fields(cls)}, "member 'type' is reserved"


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.ipc_type)
def test_round_trip_each_message(cls: Any) -> None:
    msg = build(cls)
    kind, payload = split_frame(encode(msg))
    assert kind == ATTRS
    payload.decode("ascii")                        # ASCII-only on the wire
    assert decode(payload, PEER) == msg


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.ipc_type)
def test_defaults_may_be_omitted(cls: Any) -> None:
    required = {f.name: sample(typing.get_type_hints(cls)[f.name], 3) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    body = json.dumps({"type": cls.ipc_type, **_jsonable(required)}).encode()
    assert decode(body, PEER) == cls(**required)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def test_data_and_end_frames() -> None:
    assert split_frame(encode_data(b"\x00\xffabc")) == (DATA, b"\x00\xffabc")
    assert split_frame(encode_data(b"")) == (DATA, b"")
    assert split_frame(encode_end()) == (END, b"")


def test_expect() -> None:
    hello = CleanupHello("Q1")
    assert expect(hello, CleanupHello, PEER) is hello
    with pytest.raises(IpcError, match=f"expected cleanup_result from {PEER}, got cleanup_hello"):
        expect(hello, CleanupResult, PEER)


def test_duplicate_registration_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        codec.message("cleanup_hello")(type("Dup", (), {}))


# -- malformed frames -----------------------------------------------------------

def frame(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(kind) + len(payload)) + kind + payload


def attrs(body: object) -> bytes:
    return frame(ATTRS, json.dumps(body).encode())


GOOD_ENV = {"type": "cleanup_envelope", "sender": "a@b", "recipients": [{"address": "c@d"}], "attrs": {}}

MALFORMED = [
    ("oversize", struct.pack(">I", DEFAULT_MAX_FRAME + 1) + b"A", IpcError,
     rf"frame of {DEFAULT_MAX_FRAME + 1} bytes from {PEER} \(limit {DEFAULT_MAX_FRAME}\)"),
    ("huge length", b"\xff\xff\xff\xff", IpcError, f"frame of 4294967295 bytes from {PEER}"),
    ("zero length", struct.pack(">I", 0), IpcError, f"frame of 0 bytes from {PEER}"),
    ("unknown kind", frame(b"Z", b"{}"), IpcError, f"unknown frame kind b'Z' from {PEER}"),
    ("data not attrs", frame(DATA, b"x"), IpcError, f"expected attributes from {PEER}, got frame kind D"),
    ("end not attrs", frame(END, b""), IpcError, f"expected attributes from {PEER}, got frame kind E"),
    ("bad json", frame(ATTRS, b"{not json"), IpcError, f"malformed attributes from {PEER}"),
    ("empty json", frame(ATTRS, b""), IpcError, f"malformed attributes from {PEER}"),
    ("bad utf8", frame(ATTRS, b'{"type": "\xff"}'), IpcError, f"malformed attributes from {PEER}"),
    ("deep nesting", frame(ATTRS, b"[" * 200000), IpcError, f"malformed attributes from {PEER}"),
    ("not an object", attrs([1, 2]), IpcError, f"message without type from {PEER}"),
    ("no type", attrs({"queue_id": "x"}), IpcError, f"message without type from {PEER}"),
    ("type not text", attrs({"type": 5}), IpcError, f"message without type from {PEER}"),
    ("unknown type", attrs({"type": "nope"}), IpcError, f"unknown message type 'nope' from {PEER}"),
    ("missing member", attrs({"type": "cleanup_hello"}), IpcError,
     f"cleanup_hello from {PEER}: missing member queue_id"),
    ("unknown member", attrs({"type": "cleanup_hello", "queue_id": "x", "zz": 1, "aa": 2}), IpcError,
     f"cleanup_hello from {PEER}: unknown member\\(s\\) aa, zz"),
    ("wrong type", attrs({"type": "cleanup_hello", "queue_id": 5}), IpcError,
     f"cleanup_hello from {PEER}: member queue_id: expected str, got int"),
    ("null", attrs({"type": "cleanup_hello", "queue_id": None}), IpcError,
     f"cleanup_hello from {PEER}: member queue_id: expected str, got NoneType"),
    ("bool for int", attrs({"type": "cleanup_result", "status": "ok", "queue_id": "q", "size": True}),
     IpcError, f"cleanup_result from {PEER}: member size: expected int, got bool"),
    ("float for int", attrs({"type": "cleanup_result", "status": "ok", "queue_id": "q", "size": 1.5}),
     IpcError, "member size: expected int, got float"),
    ("string for float", attrs({**dict(type="delivery_request", queue_id="q", queue_name="active",
                                       sender="", nexthop="x", recipients=[]), "arrival": "now"}),
     IpcError, "member arrival: expected float, got str"),
    ("list expected", attrs({**GOOD_ENV, "recipients": "c@d"}), IpcError,
     f"cleanup_envelope from {PEER}: member recipients: expected a list"),
    ("object expected", attrs({**GOOD_ENV, "recipients": ["c@d"]}), IpcError,
     "member recipients: expected an object"),
    ("nested missing", attrs({**GOOD_ENV, "recipients": [{}]}), IpcError,
     f"cleanup_envelope from {PEER}: member recipients: missing member address"),
    ("nested wrong", attrs({**GOOD_ENV, "recipients": [{"address": 5}]}), IpcError,
     "member recipients: member address: expected str, got int"),
    ("nested unknown", attrs({**GOOD_ENV, "recipients": [{"address": "x", "evil": "y"}]}), IpcError,
     "unknown member\\(s\\) evil"),
    ("dict of non-strings", attrs({**GOOD_ENV, "attrs": {"a": 1}}), IpcError,
     "member attrs: expected an object of strings"),
    ("dict not object", attrs({**GOOD_ENV, "attrs": ["a"]}), IpcError,
     "member attrs: expected an object of strings"),
    ("list of wrong ints", attrs({"type": "bounce_request", "queue_id": "q", "queue_name": "deferred",
                                  "kind": "failure", "indexes": [1, "2"]}), IpcError,
     "member indexes: expected int, got str"),
    ("int of 5000 digits", frame(ATTRS, b'{"type":"cleanup_result","status":"ok","queue_id":"q","size":'
                                 + b"9" * 5000 + b"}"), IpcError, f"malformed attributes from {PEER}"),
    ("int beyond 64 bits", attrs({"type": "cleanup_result", "status": "ok", "queue_id": "q",
                                  "size": 1 << 64}), IpcError, "member size: integer out of range"),
    ("negative beyond 64 bits", attrs({"type": "bounce_request", "queue_id": "q", "queue_name": "deferred",
                                       "kind": "failure", "indexes": [-(1 << 63) - 1]}), IpcError,
     "member indexes: integer out of range"),
    ("infinite float", frame(ATTRS, b'{"type":"delivery_request","queue_id":"q","queue_name":"active",'
                             b'"sender":"","nexthop":"x","recipients":[],"arrival":1e999}'), IpcError,
     "member arrival: number not finite"),
    ("NaN float", frame(ATTRS, b'{"type":"delivery_request","queue_id":"q","queue_name":"active",'
                        b'"sender":"","nexthop":"x","recipients":[],"arrival":NaN}'), IpcError,
     "member arrival: number not finite"),
    ("closed at once", b"", EOFError, f"connection closed by {PEER}"),
    ("truncated header", b"\x00\x00", EOFError, f"connection closed by {PEER}"),
    ("truncated payload", struct.pack(">I", 10) + b"A{", EOFError, f"connection closed by {PEER} mid-frame"),
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("label, data, exc, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_blocking(pair: tuple[socket.socket, socket.socket], label: str, data: bytes,
                            exc: type[Exception], message: str) -> None:
    writer, reader = pair
    writer.sendall(data)
    writer.shutdown(socket.SHUT_WR)
    with pytest.raises(exc, match=message):
        recv(reader, PEER)


async def _async_recv(data: bytes) -> Any:
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        reader, writer = await asyncio.open_unix_connection(sock=b)
        try:
            return await asyncio.wait_for(codec.async_recv(reader, PEER), TIMEOUT)
        finally:
            writer.close()
    finally:
        a.close()


@pytest.mark.parametrize("label, data, exc, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_async(label: str, data: bytes, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        asyncio.run(_async_recv(data))


def test_frame_length_is_what_the_receiver_checks(pair: tuple[socket.socket, socket.socket]) -> None:
    """A sender can tell in advance whether a peer with this limit takes a message."""
    writer, reader = pair
    msg = CleanupEnvelope("a@b", [Rcpt(f"r{i}@example.net") for i in range(50)], {})
    length = codec.frame_length(msg)
    assert length == len(encode(msg)) - 4
    send(writer, msg)
    assert recv(reader, PEER, max_frame=length) == msg
    send(writer, msg)
    with pytest.raises(IpcError, match=rf"frame of {length} bytes from {PEER} \(limit {length - 1}\)"):
        recv(reader, PEER, max_frame=length - 1)


def test_frame_at_the_limit_is_accepted(pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = pair
    payload = json.dumps({"type": "cleanup_hello", "queue_id": "x" * 100}).encode()
    writer.sendall(frame(ATTRS, payload))
    assert recv(reader, PEER, max_frame=len(payload) + 1) == CleanupHello("x" * 100)
    writer.sendall(frame(ATTRS, payload))
    with pytest.raises(IpcError, match=f"limit {len(payload)}"):
        recv(reader, PEER, max_frame=len(payload))


# -- whole conversations over sockets ---------------------------------------------

def test_conversation_blocking(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    env = CleanupEnvelope("a@b", [Rcpt("c@d", orcpt="rfc822;c@d", notify="NEVER")], {"origin": "smtpd"})
    send(client, env)
    client.sendall(encode_data(b"Subject: x\n\n") + encode_data(b"body\n") + encode_end())
    for cls in MESSAGE_CLASSES:
        send(client, build(cls, 7))
    assert recv(server, PEER) == env
    assert recv_frame(server, PEER) == (DATA, b"Subject: x\n\n")
    assert recv_frame(server, PEER) == (DATA, b"body\n")
    assert recv_frame(server, PEER) == (END, b"")
    for cls in MESSAGE_CLASSES:
        assert recv(server, PEER) == build(cls, 7)
    client.close()
    with pytest.raises(EOFError, match=f"closed by {PEER}"):
        recv(server, PEER)


def test_conversation_async() -> None:
    big = b"x" * (DEFAULT_MAX_FRAME - 1)

    async def run() -> list[Any]:
        server_got: list[Any] = []
        done = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_got.append(await codec.async_recv(reader, PEER))
            server_got.append(await codec.async_recv_frame(reader, PEER))
            server_got.append(await codec.async_recv_frame(reader, PEER))
            await codec.async_send(writer, CleanupResult("ok", "Q1", size=len(big)))
            writer.close()
            done.set()

        a, b = socket.socketpair()
        task = asyncio.create_task(handler(*await asyncio.open_unix_connection(sock=b)))
        reader, writer = await asyncio.open_unix_connection(sock=a)
        await codec.async_send(writer, CleanupHello("Q1"))
        writer.write(encode_data(big) + encode_end())
        await writer.drain()
        reply = await asyncio.wait_for(codec.async_recv(reader, PEER), TIMEOUT)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await task
        writer.close()
        return [*server_got, reply]

    got = asyncio.run(run())
    assert got == [CleanupHello("Q1"), (DATA, big), (END, b""), CleanupResult("ok", "Q1", size=len(big))]
