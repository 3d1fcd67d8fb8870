"""sendmail's message input: stdin as a stream of content chunks, and -t.

Reads what a local program pipes into ``sendmail`` and produces the
content in postpy's internal form (header and body, LF line ends), chunk
by chunk, so a message of any size passes through in bounded memory.

:class:`InputFilter` (pure byte logic, fed chunks split anywhere):

- CRLF becomes LF (Postfix's ``sendmail_fix_line_endings = always``); a
  bare LF is a line end; a bare CR is data.
- A first line that starts with ``From `` or ``>From `` (an mbox
  separator left by a mail reader) is dropped.
- Unless ``-i``/``-oi``: a line that is exactly ``.`` ends the input
  (the rest of stdin is not read).  Dots are not unstuffed: this is not
  SMTP.
- A missing final newline is added.  8-bit bytes and NULs pass unchanged.

:func:`header_recipients` gives the recipients that ``-t`` finds in the
header block: ``To:``, ``Cc:``, ``Bcc:``, or ``Resent-To:``,
``Resent-Cc:``, ``Resent-Bcc:`` when any ``Resent-`` header is present.
cleanup does the same extraction again (``extract=yes``) and removes the
Bcc headers; sendmail needs the addresses itself only to refuse a message
that has none (``EX_USAGE``) and because a maildrop file needs at least
one recipient.  Both use :func:`postpy.mail.addrlist.parse_address_list`,
so they find the same addresses (cleanup drops the duplicates), and a
header that cannot be parsed is refused here, naming it, rather than
losing a recipient.  :func:`argument_recipients` parses each argument
with the same parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from postpy.mail.addrlist import AddressError, parse_address_list
from postpy.mail.headers import HeaderBlockReader, recipient_headers

CHUNK = 65536
HEADER_BUFFER_LIMIT = 4 * 1024 * 1024     # -t: header bytes held while looking for recipients


class InputError(Exception):
    """stdin could not be read (sendmail: EX_DATAERR)."""


class InputFilter:
    def __init__(self, *, dot_ends_input: bool) -> None:
        self.dot_ends_input = dot_ends_input
        self.done = False              # the "." line was seen
        self._pending = b""            # bytes held back until the next chunk shows more
        self._first_line = True        # the first line has not been decided yet
        self._dropping = False         # inside a dropped "From " line
        self._line_start = True        # the next output byte starts a line
        self._last = b"\n"             # last byte produced ("\n" when none yet)
        self.produced = 0

    def _emit(self, data: bytes) -> bytes:
        if data:
            self._last = data[-1:]
            self.produced += len(data)
        return data

    def feed(self, chunk: bytes) -> bytes:
        """Content bytes for this chunk of input (maybe empty)."""
        if self.done:
            return b""
        data = self._pending + chunk
        self._pending = b""
        if data.endswith(b"\r"):               # perhaps half of a CRLF
            self._pending, data = b"\r", data[:-1]
        data = data.replace(b"\r\n", b"\n")
        if self._dropping:
            nl = data.find(b"\n")
            if nl < 0:
                return b""
            self._dropping = False
            data = data[nl + 1:]
        if self._first_line:
            if b"\n" not in data and len(data) < 6:
                self._pending = data + self._pending
                return b""
            self._first_line = False
            if data.startswith((b"From ", b">From ")):
                nl = data.find(b"\n")
                if nl < 0:
                    self._dropping = True
                    return b""
                data = data[nl + 1:]
        if not data:
            return b""
        if self.dot_ends_input:
            return self._emit(self._find_dot(data))
        self._line_start = data.endswith(b"\n")
        return self._emit(data)

    def _find_dot(self, data: bytes) -> bytes:
        if self._line_start and data.startswith(b".\n"):
            self.done = True
            return b""
        at = data.find(b"\n.\n")
        if at >= 0:
            self.done = True
            return data[:at + 1]
        # Hold back what could still become a "." line.
        if self._line_start and data == b".":
            self._pending = b"." + self._pending
            return b""
        if data.endswith(b"\n."):
            self._pending = b"." + self._pending
            self._line_start = True
            return data[:-1]
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """End of input: what was held back, and a final newline if missing."""
        if self.done:
            return b""
        self.done = True
        data = self._pending
        self._pending = b""
        if self._dropping or (self._first_line and data.startswith((b"From ", b">From "))):
            data = b""
        if self.dot_ends_input and self._line_start and data == b".":
            data = b""
        out = self._emit(data)
        if self.produced and self._last != b"\n":
            out += self._emit(b"\n")
        return out


def read_chunks(read: Callable[[int], bytes], filt: InputFilter) -> Iterator[bytes]:
    """Filtered content from a ``read(n)`` function until EOF or the "." line.

    A read error is :class:`InputError` (not OSError: a failure to *write*
    the queue file is reported differently).
    """
    while not filt.done:
        try:
            chunk = read(CHUNK)
        except OSError as exc:
            raise InputError(f"error reading input: {exc.strerror or exc}") from None
        if not chunk:
            tail = filt.finish()
            if tail:
                yield tail
            return
        out = filt.feed(chunk)
        if out:
            yield out


def split_header_block(chunks: Iterator[bytes], size_limit: int, count_limit: int
                       ) -> tuple[HeaderBlockReader, list[bytes]]:
    """Read content until the header block is complete (-t).

    Returns the reader (its headers) and the bytes consumed, which the
    caller writes first.  Past :data:`HEADER_BUFFER_LIMIT` bytes the search
    stops (the headers seen so far are used; cleanup sees them all).
    """
    reader = HeaderBlockReader(size_limit=size_limit, count_limit=count_limit)
    held: list[bytes] = []
    size = 0
    for chunk in chunks:
        held.append(chunk)
        size += len(chunk)
        if reader.feed(chunk) or size > HEADER_BUFFER_LIMIT:
            break
    if not reader.done and size <= HEADER_BUFFER_LIMIT:
        reader.close()
    return reader, held


def header_recipients(reader: HeaderBlockReader) -> list[str]:
    """The recipients ``-t`` takes from the header block; raises
    :class:`AddressError` naming the header that cannot be parsed."""
    found: list[str] = []
    for header in recipient_headers(reader.headers):
        if header.truncated:
            raise AddressError(f"header {header.name} exceeds header_size_limit: "
                               "its recipients cannot all be read")
        try:
            found.extend(m.address for m in parse_address_list(
                header.value.decode("utf-8", "surrogateescape")))
        except AddressError as exc:
            raise AddressError(f"bad address syntax in header {header.name}: "
                               f"{header.unfolded()[:200]!r}: {exc}") from None
    return found


def argument_recipients(args: list[str]) -> list[str]:
    """Recipients from the command line: each argument is an address list,
    so ``"Bob <bob@x>"`` and ``"a@x, b@y"`` work as with Postfix.  An
    argument that is not an address list, or holds no address, raises
    :class:`AddressError` naming it."""
    found: list[str] = []
    for arg in args:
        try:
            mailboxes = parse_address_list(arg)
        except AddressError as exc:
            raise AddressError(f"bad recipient address syntax: {arg[:200]!r}: {exc}") from None
        if not mailboxes:
            raise AddressError(f"no recipient address in argument {arg[:200]!r}")
        found.extend(m.address for m in mailboxes)
    return found
