"""Fuzz target: the ipc codec and every message of postpy.ipc.messages.

:func:`postpy.ipc.codec.decode` may only raise
:class:`~postpy.ipc.codec.IpcError`; reading frames from a socket
(:func:`~postpy.ipc.codec.recv`, :func:`~postpy.ipc.codec.recv_frame`) may
also raise ``EOFError`` when the peer closed, and nothing else.  What
decodes is an instance of a registered message with members of the declared
types, integers within 64 bits and finite floats.
"""

from __future__ import annotations

import dataclasses
import math
import socket

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.mutate import inputs
from postpy.ipc import codec, messages

PEER = "fuzz"
LIMIT = 4096


def _samples() -> list[bytes]:
    rcpt = messages.DeliveryRcpt(0, "bob@example.net", "bob", "rfc822;bob@example.net", "FAILURE")
    msgs = [
        messages.CleanupHello("4Xb2Yz1Qz3K"),
        messages.CleanupEnvelope("alice@example.org", [messages.Rcpt("bob@example.net", "bob", "", "NEVER")],
                                 {"origin": "pickup", "uid": "1000"}),
        messages.CleanupResult("perm", "4Xb2Yz1Qz3K", "5.3.4 Message size exceeds fixed limit", 12),
        messages.DeliveryRequest("4Xb2Yz1Qz3K", "active", "", "[127.0.0.1]:25", [rcpt, rcpt],
                                 1700000000.5, 1700000001.25, 1700000002.0, "smtp"),
        messages.DeliveryResult("4Xb2Yz1Qz3K", [messages.RecipientResult(1, "deferred", "4.4.1",
                                                                         "connection refused", "")]),
        messages.BounceRequest("4Xb2Yz1Qz3K", "deferred", "failure", [0, 1, 2]),
        messages.BounceResult("ok", "4Xb2Yz1Qz3L", ""),
        messages.ShowqRequest(),
        messages.ShowqReply("denied", "not allowed"),
    ]
    return [codec.encode(m)[5:] for m in msgs]


PAYLOADS = _samples()
FRAMES = ([b"\x00\x00\x00%c" % (len(p) + 1) + b"A" + p for p in PAYLOADS if len(p) < 255]
          + [codec.encode_data(b"Subject: x\n\nbody\n") + codec.encode_end()])


def _check_members(value: object) -> None:
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _check_members(getattr(value, f.name))
    elif isinstance(value, list):
        for item in value:
            _check_members(item)
    elif isinstance(value, bool | str | dict):
        pass
    elif isinstance(value, int):
        assert -codec.INT_LIMIT <= value < codec.INT_LIMIT
    else:
        assert isinstance(value, float) and math.isfinite(value)


@given(payload=inputs(PAYLOADS))
@example(payload=b'{"type":"cleanup_result","status":"ok","queue_id":"q","size":' + b"9" * 5000 + b"}")
@example(payload=b'{"type":"bounce_request","queue_id":"q","queue_name":"deferred","kind":"failure",'
                 b'"indexes":[18446744073709551616]}')
@example(payload=b'{"type":"delivery_request","queue_id":"q","queue_name":"active","sender":"",'
                 b'"nexthop":"x","recipients":[],"arrival":NaN}')
@example(payload=b"[" * 100000)
def test_decode_raises_only_ipc_error(payload: bytes) -> None:
    try:
        msg = codec.decode(payload, PEER)
    except codec.IpcError:
        return
    assert hasattr(type(msg), "ipc_type")
    _check_members(msg)


@given(stream=st.one_of(inputs(FRAMES), st.lists(inputs(FRAMES), max_size=4).map(b"".join)))
def test_reading_frames_raises_only_ipc_error_or_eof(stream: bytes) -> None:
    writer, reader = socket.socketpair()
    try:
        reader.settimeout(10)
        writer.sendall(stream)
        writer.shutdown(socket.SHUT_WR)
        for _ in range(len(stream) + 1):       # every frame takes at least 5 bytes
            try:
                kind, payload = codec.recv_frame(reader, PEER, LIMIT)
            except (codec.IpcError, EOFError):
                return
            assert kind in (codec.ATTRS, codec.DATA, codec.END) and len(payload) < LIMIT
            if kind == codec.ATTRS:
                try:
                    _check_members(codec.decode(payload, PEER))
                except codec.IpcError:
                    return
        raise AssertionError("read more frames than the stream can hold")
    finally:
        writer.close()
        reader.close()
