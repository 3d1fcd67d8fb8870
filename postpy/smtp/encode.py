"""What the smtp client puts on the wire: DATA content and DSN parameters.

- :class:`DataEncoder` turns stored content (LF line ends from cleanup, but
  CRLF or a missing final newline are handled too) into the DATA stream of
  RFC 5321 section 4.5.2: every line ends in CRLF, a line that starts with
  ``.`` gets one more, and the stream ends with ``CRLF.CRLF``.  It works on
  chunks of any size, so a message is streamed, never held whole.  A lone
  CR inside a line is passed on unchanged.  With ``stuff=False`` it makes
  BDAT content (RFC 3030): CRLF lines, no dot-stuffing, no final dot.
- :func:`xtext` (RFC 3461 section 4) encodes ENVID and ORCPT values;
  :func:`orcpt_param` builds an ORCPT value from the stored
  ``addr-type;address`` (RFC 3461 section 4.2, RFC 6533 for ``utf-8``).
- :func:`scan` tells whether content has 8-bit bytes and whether its header
  section has non-ASCII text (for BODY=8BITMIME and the SMTPUTF8 check).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_EIGHTBIT = re.compile(rb"[\x80-\xff]")


class DataEncoder:
    """Incremental CRLF conversion, long-line breaking and dot-stuffing.

    A line longer than ``line_limit`` bytes (RFC 5321 section 4.5.3.1.6:
    1000 with the CRLF) is broken by inserting CRLF SPACE, which keeps a
    header a valid folded header (Postfix's ``smtp_line_length_limit``).

    >>> enc = DataEncoder()
    >>> enc.feed(b".a\\nb") + enc.feed(b"\\n") + enc.finish()
    b'..a\\r\\nb\\r\\n.\\r\\n'
    """

    def __init__(self, line_limit: int = 998, *, stuff: bool = True) -> None:
        self._carry = b""       # an incomplete last line (no LF yet)
        self._limit = line_limit
        self._stuff = stuff     # False for BDAT (RFC 3030): no dot-stuffing, no final dot

    def _break(self, block: bytes) -> bytes:
        """Break over-long lines of LF-terminated ``block``."""
        out = []
        for line in block.split(b"\n")[:-1]:
            while len(line) > self._limit:
                out.append(line[:self._limit])
                line = b" " + line[self._limit:]
            out.append(line)
        return b"\n".join(out) + b"\n"

    def _lines(self, block: bytes) -> bytes:
        """Complete lines (``block`` ends with LF and starts a line)."""
        block = block.replace(b"\r\n", b"\n")
        # One split is far cheaper than a regex for "a line longer than N" (~1 us per KiB).
        if self._limit > 0 and len(block) > self._limit and \
                max(map(len, block.split(b"\n"))) > self._limit:
            block = self._break(block)
        block = block.replace(b"\n", b"\r\n")
        if not self._stuff:
            return block
        if block.startswith(b"."):
            block = b"." + block
        return block.replace(b"\r\n.", b"\r\n..")

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            return b""
        self._carry = data[cut + 1:]
        return self._lines(data[:cut + 1])

    def finish(self) -> bytes:
        """The rest, a CRLF if the content did not end with one, and the final dot."""
        tail = self._lines(self._carry + b"\n") if self._carry else b""
        self._carry = b""
        return tail + b".\r\n" if self._stuff else tail


def encode_all(chunks: Iterable[bytes], line_limit: int = 998) -> bytes:
    enc = DataEncoder(line_limit)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


def xtext(text: str) -> str:
    """RFC 3461 xtext: ``+``, ``=``, controls, space and non-ASCII as ``+HH``."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte < 0x21 or byte > 0x7E or byte in (0x2B, 0x3D):
            out.append(f"+{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def utf8_addr_xtext(text: str) -> str:
    """RFC 6533 utf-8-addr-xtext: non-ASCII characters as ``\\x{HEX}``, then xtext."""
    escaped = "".join(ch if ch.isascii() and ch != "\\" else f"\\x{{{ord(ch):X}}}" for ch in text)
    return xtext(escaped)


def orcpt_param(stored: str, *, smtputf8: bool) -> str:
    """``ORCPT`` value from the queue file's ``addr-type;address`` (address decoded)."""
    addr_type, sep, address = stored.partition(";")
    if not sep or not address:
        return ""
    if addr_type.lower() == "utf-8":
        if smtputf8:
            return f"{addr_type};{address}"
        return f"{addr_type};{utf8_addr_xtext(address)}"
    return f"{addr_type};{xtext(address)}"


@dataclass
class ContentScan:
    eightbit: bool = False          # any byte >= 0x80 anywhere
    header_utf8: bool = False       # non-ASCII in the header section


def scan(chunks: Iterable[bytes]) -> ContentScan:
    """Look at the content once: 8-bit bytes, and non-ASCII headers."""
    result = ContentScan()
    in_header = True
    tail = b""
    for chunk in chunks:
        if in_header:
            data = tail + chunk
            end = _header_end(data)
            head = data if end < 0 else data[:end]
            if _EIGHTBIT.search(head):
                result.header_utf8 = True
            if end >= 0:
                in_header = False
            tail = data[-2:]
        if not result.eightbit and _EIGHTBIT.search(chunk):
            result.eightbit = True
        if result.eightbit and not in_header:
            break
    return result


def _header_end(data: bytes) -> int:
    """Offset of the empty line that ends the header section, or -1."""
    if data.startswith((b"\n", b"\r\n")):
        return 0
    found = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
    return min(found) if found else -1
