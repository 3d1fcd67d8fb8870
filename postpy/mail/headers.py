"""Message header blocks: incremental parsing, names, unfolding, dates.

Mail knowledge shared by the programs that look at a message's primary
header block (RFC 5322 section 2.2): cleanup (which rewrites it), the
sendmail command (``-t`` needs the recipients before it exits) and the
delivery agents.  Everything here works on bytes with LF line ends, the
form content takes inside postpy, and imports nothing expensive (no
``email`` package), so commands may use it freely.

:class:`HeaderBlockReader` is fed the content in chunks of any size and
collects the header block, one raw header (first line plus continuation
lines, each ending in LF) at a time, until the block ends.  It is strict
about what a header is and lenient about what follows:

- A header line is ``name:`` where the name is one or more printable
  US-ASCII characters other than ``:`` (RFC 5322 ``ftext``); white space
  between the name and the colon is tolerated (obsolete syntax, RFC 5322
  section 4.5).
- A line that starts with SP or HT continues the current header.
- The block ends at the first empty line (``\\n`` or ``\\r\\n``), or at the
  first line that is neither a header nor a continuation (a line without
  a colon, 8-bit bytes in the name, a continuation with no header before
  it).  In that case the message had no separator, and
  :attr:`HeaderBlockReader.separator` is False: the caller inserts an empty
  line so that the line is body text for everyone downstream.  The end of
  the content also ends the block (``separator`` False, no body).
- ``count_limit`` (header_count_limit): the header after the limit, and
  everything after it, is body.  ``size_limit`` (header_size_limit): the
  part of a header beyond the limit is discarded (the header is cut at a
  line boundary when it can be), as Postfix does.  Memory held is therefore
  bounded by about ``count_limit * size_limit``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_HEADER_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BLANK = (b"\n", b"\r\n")


def header_name(line: bytes) -> str | None:
    """The header name at the start of ``line``, or None when it is not a header."""
    m = _HEADER_LINE.match(line)
    return m.group(1).decode("ascii") if m else None


@dataclass
class Header:
    """One header as it appears in the message: every byte, folded lines included."""

    name: str           # as written; compare with :meth:`is_`
    raw: bytes          # "Name: value\n\tcontinued\n"
    truncated: bool = False

    def is_(self, *names: str) -> bool:
        """Case-insensitive name test (RFC 5322 section 1.2.2)."""
        lower = self.name.lower()
        return any(lower == n.lower() for n in names)

    @property
    def value(self) -> bytes:
        """The raw value after the colon, still folded."""
        return self.raw.split(b":", 1)[1]

    def unfolded(self) -> str:
        """The value unfolded (RFC 5322 section 2.2.3) and stripped, as text.

        Bytes that are not UTF-8 survive as surrogate escapes.
        """
        return unfold(self.value).decode("utf-8", "surrogateescape").strip()


def unfold(value: bytes) -> bytes:
    """Remove the line breaks of folded header text (CRLF or LF before WSP)."""
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).rstrip(b"\r\n")


def find(headers: list[Header], name: str) -> list[Header]:
    return [h for h in headers if h.is_(name)]


def has(headers: list[Header], name: str) -> bool:
    return any(h.is_(name) for h in headers)


RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
RESENT_RECIPIENT_HEADERS = ("Resent-To", "Resent-Cc", "Resent-Bcc")


def recipient_headers(headers: list[Header]) -> list[Header]:
    """The headers ``sendmail -t`` takes recipients from.

    ``Resent-To:``, ``Resent-Cc:`` and ``Resent-Bcc:`` when any ``Resent-``
    header is present (the message is being re-sent, RFC 5322 section
    3.6.6), otherwise ``To:``, ``Cc:`` and ``Bcc:``.  Split their values
    into addresses with :func:`postpy.mail.addrlist.parse_address_list`.
    """
    resent = any(h.name.lower().startswith("resent-") for h in headers)
    names = RESENT_RECIPIENT_HEADERS if resent else RECIPIENT_HEADERS
    return [h for h in headers if h.is_(*names)]


class HeaderBlockReader:
    """Collect the primary header block from content fed in chunks.

    >>> r = HeaderBlockReader()
    >>> r.feed(b"Subject: hi\\n\\nbody\\n")
    True
    >>> [h.name for h in r.headers], r.body_start
    (['Subject'], b'body\\n')
    """

    def __init__(self, size_limit: int = 102400, count_limit: int = 1000) -> None:
        self.size_limit = max(size_limit, 64)
        self.count_limit = count_limit
        self.headers: list[Header] = []
        self.done = False
        self.separator = True       # False: the body began without an empty line
        self.body_start = b""       # bytes after the header block
        self.truncated: list[str] = []   # names of headers cut at size_limit
        self._pending = bytearray()
        self._current: bytearray | None = None
        self._current_truncated = False
        self._discard_to_eol = False

    # -- feeding --------------------------------------------------------
    def feed(self, data: bytes) -> bool:
        """Add content; True once the block is complete (see :attr:`body_start`)."""
        if self.done:
            raise ValueError("header block already complete")
        start = 0
        if self._discard_to_eol:
            nl = data.find(b"\n")
            if nl < 0:
                return False
            start = nl + 1
            self._discard_to_eol = False
        self._pending += data[start:] if start else data
        while not self.done:
            nl = self._pending.find(b"\n")
            if nl < 0:
                if len(self._pending) > self.size_limit:
                    self._overlong_line()
                break
            line = bytes(self._pending[:nl + 1])
            del self._pending[:nl + 1]
            self._line(line)
        if self.done:
            self.body_start += bytes(self._pending)
            self._pending.clear()
        return self.done

    def close(self) -> None:
        """End of content: whatever is pending completes the block."""
        if self.done:
            return
        if self._pending:
            line = bytes(self._pending)
            self._pending.clear()
            self._line(line if self._classify(line) == "body" else line + b"\n")
        if not self.done:
            self._end(b"", separator=False)     # the message had no body at all

    # -- one line ---------------------------------------------------------
    def _classify(self, line: bytes) -> str:
        if line in _BLANK:
            return "blank"
        if line[:1] in (b" ", b"\t"):
            return "continuation" if self._current is not None else "body"
        if _HEADER_LINE.match(line) and len(self.headers) + (self._current is not None) < self.count_limit:
            return "header"
        return "body"

    def _line(self, line: bytes) -> None:
        kind = self._classify(line)
        if kind == "continuation":
            assert self._current is not None
            if self._current_truncated:
                return
            if len(self._current) + len(line) > self.size_limit:
                self._current_truncated = True
                return
            self._current += line
        elif kind == "header":
            self._flush_current()
            self._current = bytearray(line[:self.size_limit])
            self._current_truncated = len(line) > self.size_limit
            if self._current_truncated:
                self._current += b"\n"
        elif kind == "blank":
            self._end(b"", separator=True)
        else:
            self._end(line, separator=False)

    def _overlong_line(self) -> None:
        """A line longer than size_limit with no LF yet: decide what it is now."""
        prefix = bytes(self._pending[:self.size_limit])
        kind = self._classify(prefix)
        if kind == "body":
            self._end(b"", separator=False)      # pending bytes become the body
            return
        # A header or continuation: keep what fits, drop the rest of the line.
        self._pending.clear()
        self._discard_to_eol = True
        if kind == "header":
            self._flush_current()
            self._current = bytearray(prefix + b"\n")
        self._current_truncated = True

    def _flush_current(self) -> None:
        if self._current is None:
            return
        raw = bytes(self._current)
        name = header_name(raw) or ""
        if self._current_truncated:
            self.truncated.append(name)
        self.headers.append(Header(name, raw, self._current_truncated))
        self._current = None
        self._current_truncated = False

    def _end(self, first_body: bytes, *, separator: bool) -> None:
        self._flush_current()
        self.done = True
        self.separator = separator
        self.body_start = first_body


# -- dates --------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc5322_date(when: float | None = None) -> str:
    """Local time as RFC 5322 section 3.3 wants it, with the zone name as a comment.

    ``Mon, 25 Aug 2025 10:11:12 +0200 (CEST)``: English names whatever
    the locale, numeric offset, the abbreviation only as a comment.
    """
    t = time.localtime(time.time() if when is None else when)
    offset = t.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    zone = f" ({t.tm_zone})" if t.tm_zone and t.tm_zone.isalpha() else ""
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}{zone}")


def message_id_stamp(when: float | None = None) -> str:
    """``YYYYMMDDhhmmss`` in UTC, the left part of generated Message-IDs."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if when is None else when))
