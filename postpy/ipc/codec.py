"""The one encoding spoken between postpy programs over unix sockets.

A conversation is a sequence of frames.  A frame is::

    length (4 bytes, big endian, counts kind + payload)  kind (1 byte)  payload

Kinds:
  ``A``  attributes: a JSON object whose ``"type"`` names the message; its
         other members are the fields of that message's dataclass
  ``D``  data: raw bytes (message content, streamed in chunks)
  ``E``  end of data (empty payload)

A frame larger than the limit (``ipc_max_frame``, default 1 MiB) is refused
before its payload is read; a sender that must not be refused checks
:func:`frame_length` first.  Messages are dataclasses registered with
:func:`message`; :func:`decode` is strict: an unknown type, a missing or
unknown member, a member of the wrong JSON type, an integer outside the
signed 64-bit range or a float that is not finite raises :class:`IpcError`
with the peer's name in the text, and nothing else does (the JSON parser's
own limits, on digits and nesting, are reported the same way).  Both sides
of a conversation import the same dataclasses (see
:mod:`postpy.ipc.messages`), so they read as a pair.

Blocking helpers (``send``/``recv``) serve the synchronous programs; the
``async_`` helpers serve asyncio ones.  Strings are carried as JSON text
with ASCII escapes, so non-UTF-8 bytes held as surrogate escapes survive.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import struct
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # asyncio costs ~50 ms to import; blocking users never need it
    import asyncio

DEFAULT_MAX_FRAME = 1024 * 1024
ATTRS, DATA, END = b"A", b"D", b"E"
_HEADER = struct.Struct(">I")
INT_LIMIT = 1 << 63             # integers are signed 64-bit, as in every peer's use

T = TypeVar("T")
_REGISTRY: dict[str, type] = {}
_JSON_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,),
}


class IpcError(Exception):
    """A malformed or unexpected frame; the text names the peer."""


def message(name: str) -> typing.Callable[[type[T]], type[T]]:
    """Register a dataclass as the message type ``name``."""

    def register(cls: type[T]) -> type[T]:
        if name in _REGISTRY:
            raise ValueError(f"ipc message type {name} registered twice")
        cls.ipc_type = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return register


def encode(msg: Any) -> bytes:
    """One ``A`` frame for a registered dataclass instance."""
    body = {"type": type(msg).ipc_type}
    body.update(dataclasses.asdict(msg))
    payload = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return _HEADER.pack(len(payload) + 1) + ATTRS + payload


def frame_length(msg: Any) -> int:
    """The length a receiver checks against its limit for ``encode(msg)``."""
    return len(encode(msg)) - _HEADER.size


def encode_data(data: bytes) -> bytes:
    return _HEADER.pack(len(data) + 1) + DATA + data


def encode_end() -> bytes:
    return _HEADER.pack(1) + END


def _check(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise IpcError(f"{where}: expected a list")
        return [_check(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise IpcError(f"{where}: expected an object of strings")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise IpcError(f"{where}: expected an object")
        return _build(hint, value, where)  # type: ignore[arg-type]
    allowed = _JSON_TYPES.get(hint)
    if allowed is None:
        raise IpcError(f"{where}: unsupported field type {hint}")
    if not isinstance(value, allowed) or (hint is not bool and isinstance(value, bool)):
        raise IpcError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT <= value < INT_LIMIT:
        raise IpcError(f"{where}: integer out of range")
    if isinstance(value, float) and not math.isfinite(value):
        raise IpcError(f"{where}: number not finite")
    return value


_SCHEMAS: dict[type, tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]] = {}


def _build(cls: type[T], body: dict[str, Any], where: str) -> T:
    # get_type_hints() evaluates the string annotations again on every call
    # (about 0.1 ms a class): resolve each message class once per process.
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = (typing.get_type_hints(cls),
                                  {f.name: f for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    hints, fields = schema
    unknown = set(body) - set(fields)
    if unknown:
        raise IpcError(f"{where}: unknown member(s) {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise IpcError(f"{where}: missing member {name}")
            continue
        kwargs[name] = _check(body[name], hints[name], f"{where}: member {name}")
    return cls(**kwargs)


def decode(payload: bytes, peer: str = "peer") -> Any:
    """Decode an ``A`` payload into its registered dataclass."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):   # deep nesting: RecursionError
        raise IpcError(f"malformed attributes from {peer}") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise IpcError(f"message without type from {peer}")
    name = body.pop("type")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise IpcError(f"unknown message type {name!r} from {peer}")
    return _build(cls, body, f"{name} from {peer}")


def expect(msg: Any, cls: type[T], peer: str = "peer") -> T:
    if not isinstance(msg, cls):
        got = getattr(type(msg), "ipc_type", type(msg).__name__)
        raise IpcError(f"expected {cls.ipc_type} from {peer}, got {got}")  # type: ignore[attr-defined]
    return msg


# -- blocking sockets ---------------------------------------------------------

def _recv_exact(sock: socket.socket, n: int, peer: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed by {peer}" + (" mid-frame" if buf else ""))
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, peer: str = "peer",
               max_frame: int = DEFAULT_MAX_FRAME) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame; EOFError when the peer closed."""
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, peer))
    if length < 1 or length > max_frame:
        raise IpcError(f"frame of {length} bytes from {peer} (limit {max_frame})")
    frame = _recv_exact(sock, length, peer)
    kind = frame[:1]
    if kind not in (ATTRS, DATA, END):
        raise IpcError(f"unknown frame kind {kind!r} from {peer}")
    return kind, frame[1:]


def recv(sock: socket.socket, peer: str = "peer", max_frame: int = DEFAULT_MAX_FRAME) -> Any:
    """The next message, which must be an ``A`` frame."""
    kind, payload = recv_frame(sock, peer, max_frame)
    if kind != ATTRS:
        raise IpcError(f"expected attributes from {peer}, got frame kind {kind.decode()}")
    return decode(payload, peer)


def send(sock: socket.socket, msg: Any) -> None:
    sock.sendall(encode(msg))


# -- asyncio streams ----------------------------------------------------------

async def async_recv_frame(reader: asyncio.StreamReader, peer: str = "peer",
                           max_frame: int = DEFAULT_MAX_FRAME) -> tuple[bytes, bytes]:
    import asyncio

    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        raise EOFError(f"connection closed by {peer}") from exc
    (length,) = _HEADER.unpack(header)
    if length < 1 or length > max_frame:
        raise IpcError(f"frame of {length} bytes from {peer} (limit {max_frame})")
    try:
        frame = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise EOFError(f"connection closed by {peer} mid-frame") from exc
    kind = frame[:1]
    if kind not in (ATTRS, DATA, END):
        raise IpcError(f"unknown frame kind {kind!r} from {peer}")
    return kind, frame[1:]


async def async_recv(reader: asyncio.StreamReader, peer: str = "peer",
                     max_frame: int = DEFAULT_MAX_FRAME) -> Any:
    kind, payload = await async_recv_frame(reader, peer, max_frame)
    if kind != ATTRS:
        raise IpcError(f"expected attributes from {peer}, got frame kind {kind.decode()}")
    return decode(payload, peer)


async def async_send(writer: asyncio.StreamWriter, msg: Any) -> None:
    writer.write(encode(msg))
    await writer.drain()
