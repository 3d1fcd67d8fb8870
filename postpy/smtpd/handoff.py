"""smtpd's side of the cleanup conversation: hand one message to cleanup.

smtpd never writes the queue.  For each message it connects to
``private/cleanup`` (queue-relative: smtpd runs in the queue directory),
and follows :mod:`postpy.ipc.messages`:

1. read :class:`CleanupHello` (the queue ID, logged as ``ID: client=...``);
2. send :class:`CleanupEnvelope` (sender, recipients, client attributes);
3. stream the content as ``D`` frames of at most :data:`FRAME_DATA` bytes
   while the client sends it (never the whole message in memory);
4. send ``E`` (with ``smtpd_milters``: then the milters' changes,
   :class:`CleanupEdits`, and a replacement body) and wait for
   :class:`CleanupResult`, which cleanup sends only once the queue file and
   its directory entry are on disk.  Only then may the client get its ``250``.

:meth:`Handoff.abort` closes the connection without ``E``; cleanup then
discards the partial file, which is how a client that disconnects before
the final dot, or a message that is too large, leaves nothing queued.
Every problem with cleanup (unreachable, dead, malformed answer, too slow)
is a :class:`HandoffError` whose text is logged as a warning; the client
gets a temporary error.
"""

from __future__ import annotations

import asyncio

from postpy.ipc import codec
from postpy.ipc.messages import CleanupEdits, CleanupEnvelope, CleanupHello, CleanupResult

FRAME_DATA = 64 * 1024
PEER = "cleanup"


class HandoffError(Exception):
    """cleanup could not take the message; str() says why."""


class Handoff:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 queue_id: str, timeout: float, max_frame: int) -> None:
        self.reader = reader
        self.writer = writer
        self.queue_id = queue_id
        self.timeout = timeout
        self.max_frame = max_frame
        self.size = 0
        self.closed = False
        self.edits_expected = False     # envelope attribute milter_edits = yes
        self._pending = bytearray()

    @classmethod
    async def open(cls, path: str, envelope: CleanupEnvelope, *, timeout: float,
                   max_frame: int = codec.DEFAULT_MAX_FRAME) -> Handoff:
        """Connect, read the queue ID, send the envelope."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=max_frame + 16)
        except (OSError, TimeoutError) as exc:
            raise HandoffError(f"connect to {path}: {exc}") from None
        handoff = cls(reader, writer, "", timeout, max_frame)
        handoff.edits_expected = envelope.attrs.get("milter_edits") == "yes"
        try:
            async with asyncio.timeout(timeout):
                hello = codec.expect(await codec.async_recv(reader, PEER, max_frame), CleanupHello, PEER)
                handoff.queue_id = hello.queue_id
                await codec.async_send(writer, envelope)
        except (OSError, EOFError, TimeoutError, codec.IpcError) as exc:
            handoff.abort()
            raise HandoffError(f"{path}: {exc or type(exc).__name__}") from None
        return handoff

    async def _send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            self.abort()
            raise HandoffError(f"write to {PEER} for {self.queue_id}: "
                               f"{exc or type(exc).__name__}") from None

    async def write(self, data: bytes) -> None:
        """Content bytes (LF line ends); sent in frames of FRAME_DATA."""
        self.size += len(data)
        pending = self._pending
        pending += data
        if len(pending) < FRAME_DATA:
            return
        frames = []
        while len(pending) >= FRAME_DATA:
            frames.append(codec.encode_data(bytes(pending[:FRAME_DATA])))
            del pending[:FRAME_DATA]
        await self._send(b"".join(frames))

    async def finish(self, edits: CleanupEdits | None = None, body: bytes | None = None) -> CleanupResult:
        """End the content (then send the milters' ``edits`` and new ``body``)
        and wait until cleanup says the file is safe."""
        tail = codec.encode_data(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        out = [tail, codec.encode_end()]
        if self.edits_expected:
            edits = edits if edits is not None else CleanupEdits()
            edits.replace_body = body is not None
            out.append(codec.encode(edits))
            if body is not None:
                out += [codec.encode_data(body[i:i + FRAME_DATA]) for i in range(0, len(body), FRAME_DATA)]
                out.append(codec.encode_end())
        await self._send(b"".join(out))
        try:
            async with asyncio.timeout(self.timeout):
                result = codec.expect(await codec.async_recv(self.reader, PEER, self.max_frame),
                                      CleanupResult, PEER)
        except (OSError, EOFError, TimeoutError, codec.IpcError) as exc:
            raise HandoffError(f"{PEER} for {self.queue_id}: {exc or type(exc).__name__}") from None
        finally:
            self.abort()
        return result

    def abort(self) -> None:
        """Close without E: cleanup drops the message."""
        if not self.closed:
            self.closed = True
            self.writer.close()
