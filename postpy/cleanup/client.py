"""The blocking client side of the cleanup conversation.

Used by pickup (and usable by bounce and local, which also submit mail):
connect to ``private/cleanup`` (queue-relative), learn the new queue ID,
send the envelope and the content, and wait for cleanup's verdict::

    with CleanupClient() as client:
        maillog.info(f"{client.queue_id}: uid={uid} from=<{sender}>")
        result = client.submit(sender, recipients, attrs, chunks)

The conversation itself is defined in :mod:`postpy.ipc.messages`.  If
producing the content raises, the connection is closed before the ``E``
frame, so cleanup discards the message.  asyncio programs (smtpd) speak the
same messages with the codec's ``async_`` helpers instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from types import TracebackType

from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, CleanupHello, CleanupResult, Rcpt

CLEANUP_SOCKET = "private/cleanup"
FRAME_DATA = 64 * 1024


class CleanupUnavailable(Exception):
    """cleanup could not be reached or broke off the conversation."""


class CleanupClient:
    def __init__(self, path: str = CLEANUP_SOCKET, timeout: float = 3600.0,
                 max_frame: int = codec.DEFAULT_MAX_FRAME) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self.sock: socket.socket | None = None
        self.queue_id = ""

    def __enter__(self) -> CleanupClient:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> str:
        """Connect and read the hello; return the new message's queue ID."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            hello = codec.expect(codec.recv(sock, "cleanup", self.max_frame), CleanupHello, "cleanup")
        except (OSError, EOFError, codec.IpcError) as exc:
            sock.close()
            raise CleanupUnavailable(f"connect to {self.path}: {exc}") from None
        self.sock = sock
        self.queue_id = hello.queue_id
        return self.queue_id

    def submit(self, sender: str, recipients: list[Rcpt], attrs: dict[str, str],
               content: Iterable[bytes]) -> CleanupResult:
        """Send one message; cleanup's result (ok, temp or perm)."""
        sock = self.sock
        if sock is None:
            raise CleanupUnavailable("not connected")
        try:
            codec.send(sock, CleanupEnvelope(sender, recipients, attrs))
            for chunk in content:
                for start in range(0, len(chunk), FRAME_DATA):
                    sock.sendall(codec.encode_data(chunk[start:start + FRAME_DATA]))
            sock.sendall(codec.encode_end())
            result = codec.expect(codec.recv(sock, "cleanup", self.max_frame), CleanupResult, "cleanup")
        except (OSError, EOFError, codec.IpcError) as exc:
            self.close()
            raise CleanupUnavailable(f"{self.path}: {exc}") from None
        except BaseException:
            self.close()        # no E frame: cleanup drops the message
            raise
        if result.queue_id != self.queue_id:
            raise CleanupUnavailable(f"{self.path}: result for {result.queue_id}, expected {self.queue_id}")
        return result

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
