"""cleanup: the body of a message cut into the pieces content checks look at.

:mod:`postpy.cleanup.checks` feeds the body (everything after the primary
header block) through :class:`MimeScanner` as it arrives and gets back
pieces that, put together, are exactly the bytes fed:

- ``header``: one logical header (first line and its continuation lines)
  of a MIME part (``MULTIPART``) or of an attached message (``NESTED``);
- ``body``: one physical line of anything else -- text, boundaries,
  preambles, the blank lines that end header blocks -- or a piece of at
  most ``line_limit`` bytes of a longer line; each belongs to a numbered
  *segment* (a new one starts after every header block and boundary), so
  body_checks_size_limit can count per segment;
- ``raw``: bytes that need no look: once the message can hold no more
  MIME structure (no open multipart) and the caller wants no body lines.

The structure is the one Postfix's cleanup follows: the primary header
block's Content-Type says whether the body is a multipart (with its
boundary) or an attached message (``message/rfc822`` in 7bit, 8bit or
binary: its headers come first); each part of a multipart starts with a
header block; a line ``--boundary`` starts a part of any enclosing
multipart, ``--boundary--`` closes it; parts of ``multipart/digest`` are
messages unless they say otherwise.  A header block ends at an empty line
or at the first line that is no header.  Nesting stops being followed at
:data:`NESTING_LIMIT`; a part header longer than ``header_limit`` is cut
into a header and body pieces.  Nothing is decoded: base64 or
quoted-printable parts are seen as they are encoded, as in Postfix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postpy.mail.headers import Header, header_name

MULTIPART, NESTED = "multipart", "nested"
HEADER, BODY, RAW = "header", "body", "raw"
NESTING_LIMIT = 100
_PARAM_BOUNDARY = re.compile(rb";\s*boundary\s*=\s*(?:\"([^\"]*)\"|([^\s;]+))", re.IGNORECASE)
_TYPE = re.compile(rb"\s*([^\s/;]+)\s*/\s*([^\s;]+)")
_IDENTITY = (b"", b"7bit", b"8bit", b"binary")


@dataclass(frozen=True)
class Piece:
    kind: str                 # HEADER, BODY or RAW
    data: bytes               # the bytes as in the message
    header_class: str = ""    # HEADER: MULTIPART or NESTED
    segment: int = 0          # BODY: which body segment


@dataclass
class _Entity:
    """What a header block said about the content after it."""

    ctype: bytes = b""
    subtype: bytes = b""
    boundary: bytes = b""
    encoding: bytes = b""

    def note(self, raw: bytes) -> None:
        name = (header_name(raw) or "").lower()
        value = raw.split(b":", 1)[1] if b":" in raw else b""
        value = re.sub(rb"\r?\n[ \t]", b" ", value)
        if name == "content-type":
            m = _TYPE.match(value)
            if m:
                self.ctype, self.subtype = m.group(1).lower(), m.group(2).lower()
            b = _PARAM_BOUNDARY.search(value)
            self.boundary = (b.group(1) or b.group(2) or b"") if b else b""
        elif name == "content-transfer-encoding":
            self.encoding = value.strip().lower()


class MimeScanner:
    """Feed body bytes in chunks of any size; get :class:`Piece` lists back."""

    def __init__(self, primary: list[Header], *, line_limit: int = 2048,
                 header_limit: int = 102400, body_lines: bool = True) -> None:
        self.line_limit = max(line_limit, 80)
        self.header_limit = max(header_limit, 80)
        self.body_lines = body_lines
        self._boundaries: list[tuple[bytes, bool]] = []    # (boundary, is a digest)
        self._in_headers = False
        self._header_class = ""
        self._entity = _Entity()
        self._current = bytearray()          # the part header being collected
        self._overflow = False               # its continuation lines go out as body
        self._buffer = bytearray()           # an incomplete line
        self._midline = False                # the buffer continues a line cut at line_limit
        self._segment = 0
        self._out: list[Piece] = []
        entity = _Entity()
        for header in primary:
            entity.note(header.raw)
        self._enter(entity)

    # -- feeding ------------------------------------------------------------
    def feed(self, data: bytes) -> list[Piece]:
        if self._raw():
            return [Piece(RAW, data)] if data else []
        self._buffer += data
        start, limit = 0, self.line_limit
        while not self._raw():
            nl = self._buffer.find(b"\n", start, start + limit + 1)
            if nl >= 0:
                self._line(bytes(self._buffer[start:nl + 1]))
                start = nl + 1
            elif len(self._buffer) - start > limit:
                self._long_line(bytes(self._buffer[start:start + limit]))
                start += limit
            else:
                break
        del self._buffer[:start]
        if self._raw() and self._buffer:
            self._out.append(Piece(RAW, bytes(self._buffer)))
            self._buffer.clear()
        return self._take()

    def close(self) -> list[Piece]:
        """The end of the content: whatever is held goes out."""
        if self._buffer:
            self._line(bytes(self._buffer))
            self._buffer.clear()
        self._flush_header()
        return self._take()

    def _take(self) -> list[Piece]:
        out, self._out = self._out, []
        return out

    def _raw(self) -> bool:
        return not self.body_lines and not self._in_headers and not self._boundaries

    # -- one line -------------------------------------------------------------
    def _line(self, line: bytes) -> None:
        midline, self._midline = self._midline, False
        if midline:
            self._body(line)
            return
        if self._boundary(line):
            return
        if not self._in_headers:
            self._body(line)
            return
        if line[:1] in (b" ", b"\t") and self._current:
            if self._overflow or len(self._current) + len(line) > self.header_limit:
                self._flush_header()
                self._overflow = True
                self._body(line)
            else:
                self._current += line
            return
        self._flush_header()
        if line in (b"\n", b"\r\n"):
            self._end_headers()
            self._body(line)
        elif header_name(line) is not None and len(line) <= self.header_limit:
            self._current += line
        else:
            self._end_headers()           # no empty line: this is already content
            self._line(line)

    def _long_line(self, piece: bytes) -> None:
        """``line_limit`` bytes of a line with no end yet."""
        if self._in_headers:
            self._flush_header()
            self._end_headers()
        self._body(piece)
        self._midline = True

    def _body(self, data: bytes) -> None:
        self._out.append(Piece(BODY, data, segment=self._segment))

    def _flush_header(self) -> None:
        if self._current:
            raw = bytes(self._current)
            self._entity.note(raw)
            self._out.append(Piece(HEADER, raw, header_class=self._header_class))
            self._current.clear()

    def _boundary(self, line: bytes) -> bool:
        """A ``--boundary`` line of an open multipart: handle it, say True."""
        if not (self._boundaries and line.startswith(b"--")):
            return False
        for depth in range(len(self._boundaries) - 1, -1, -1):
            boundary, digest = self._boundaries[depth]
            if not line.startswith(boundary, 2):
                continue
            self._flush_header()
            self._overflow = False
            closing = line[2 + len(boundary):].startswith(b"--")
            del self._boundaries[depth if closing else depth + 1:]
            self._segment += 1
            self._body(line)
            if closing:
                self._in_headers = False
            else:
                self._start_headers(MULTIPART, _Entity(b"message", b"rfc822") if digest else _Entity())
            return True
        return False

    # -- header blocks ------------------------------------------------------------
    def _start_headers(self, header_class: str, defaults: _Entity) -> None:
        self._in_headers = True
        self._header_class = header_class
        self._entity = defaults
        self._overflow = False

    def _end_headers(self) -> None:
        if self._in_headers:
            self._in_headers = False
            self._enter(self._entity)

    def _enter(self, entity: _Entity) -> None:
        """The content after a header block, as its Content-Type says."""
        self._segment += 1
        if entity.ctype == b"multipart" and entity.boundary and \
                len(self._boundaries) < NESTING_LIMIT:
            self._boundaries.append((entity.boundary, entity.subtype == b"digest"))
        elif entity.ctype == b"message" and entity.subtype in (b"rfc822", b"global") and \
                entity.encoding in _IDENTITY and len(self._boundaries) < NESTING_LIMIT:
            self._start_headers(NESTED, _Entity())
