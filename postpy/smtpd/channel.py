"""The client connection as smtpd sees it: buffered lines, chunks, replies, TLS.

One :class:`Channel` per SMTP session wraps the asyncio stream pair.

- Input is kept in one buffer, so the session can take command lines,
  DATA bytes and BDAT chunks from it in any order, and can push back
  what the DATA reader read past the end of a message.
- Replies are collected and written in one piece just before smtpd would
  wait for the client (RFC 2920 section 3.1: replies to pipelined commands
  go back in order, and batching them saves packets).
- Every wait for the client is bounded by ``smtpd_timeout``
  (:class:`ClientTimeout`); end of file or a reset is :class:`ClientGone`.
- :meth:`start_tls` throws away everything the client sent after
  STARTTLS and before the handshake, both in our buffer and in the stream
  reader's, so a man in the middle cannot inject commands that would be
  taken as if they came over TLS (CVE-2011-0411).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

from postpy.smtpd.replies import Reply

READ_SIZE = 65536


class ClientGone(Exception):
    """The client closed or reset the connection."""


class ClientTimeout(Exception):
    """The client sent nothing for smtpd_timeout seconds."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.tls_active = False

    # -- output -------------------------------------------------------------
    def reply(self, reply: Reply) -> None:
        self.out.append(reply.encode())

    async def flush(self) -> None:
        if not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except TimeoutError:
            raise ClientTimeout() from None
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            raise ClientGone(str(exc)) from None

    # -- input --------------------------------------------------------------
    async def _fill(self) -> None:
        """Flush replies, then wait for more input."""
        await self.flush()
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise ClientTimeout() from None
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            raise ClientGone(str(exc)) from None
        if not data:
            raise ClientGone("end of file")
        self.buf += data

    def pending(self) -> int:
        """Bytes the client sent that were not used yet (pipelining checks)."""
        queued = getattr(self.reader, "_buffer", None)
        return len(self.buf) + (len(queued) if isinstance(queued, bytearray) else 0)

    def has_line(self) -> bool:
        return b"\n" in self.buf

    async def read_line(self, limit: int) -> bytes | None:
        """The next line with its terminator (LF or CRLF), or None when it was
        longer than ``limit`` bytes (it is then discarded up to its LF)."""
        scanned = 0
        too_long = False
        while True:
            nl = self.buf.find(b"\n", scanned)
            if nl >= 0:
                line = bytes(self.buf[:nl + 1])
                del self.buf[:nl + 1]
                if too_long or len(line.rstrip(b"\r\n")) > limit:
                    return None
                return line
            if len(self.buf) > limit + 2:
                too_long = True
                keep_cr = self.buf.endswith(b"\r")
                self.buf.clear()
                if keep_cr:
                    self.buf += b"\r"
            scanned = len(self.buf)
            await self._fill()

    async def read_chunk(self) -> bytes:
        """Whatever input is buffered, or the next read from the client."""
        if not self.buf:
            await self._fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def read_counted(self, count: int) -> AsyncIterator[bytes]:
        """Exactly ``count`` bytes, in pieces (BDAT)."""
        remaining = count
        while remaining:
            if not self.buf:
                await self._fill()
            piece = bytes(self.buf[:remaining])
            del self.buf[:len(piece)]
            remaining -= len(piece)
            yield piece

    def unread(self, data: bytes) -> None:
        """Give back bytes read past the end of a message."""
        if data:
            self.buf[:0] = data

    # -- TLS ----------------------------------------------------------------
    def discard_input(self) -> int:
        """Drop everything received but not yet used; return how much."""
        dropped = len(self.buf)
        self.buf.clear()
        # The stream reader may hold bytes we have not asked for yet.  The
        # stdlib offers no public way to empty it, so clear its buffer.
        pending = getattr(self.reader, "_buffer", None)
        if isinstance(pending, bytearray):
            dropped += len(pending)
            pending.clear()
        return dropped

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Handshake as the server; raises ClientGone when it fails."""
        await self.flush()
        self.discard_input()
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=timeout)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError) as exc:
            raise ClientGone(f"TLS handshake failed: {exc}") from None
        self.tls_active = True

    def tls_object(self) -> ssl.SSLObject | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    async def close(self) -> None:
        try:
            await self.flush()
        except (ClientGone, ClientTimeout):
            pass
        self.writer.close()
