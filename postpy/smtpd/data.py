"""Message content as the client sends it: DATA framing and BDAT chunks.

Reads raw bytes from the client (in chunks of any size, split anywhere)
and produces the content in postpy's internal form, which cleanup stores:
header and body with LF line ends.  Pure byte logic, no I/O, so every
smuggling variant is a table-driven unit test.

DATA (RFC 5321 section 4.1.1.4 and 4.5.2)
-----------------------------------------
- The content ends at ``<CR><LF>.<CR><LF>`` and nowhere else: a line that
  is exactly ``.``, terminated by CRLF, and preceded by a CRLF line end
  (the first line of the content is preceded by the CRLF of the DATA
  command).  ``<LF>.<LF>``, ``<CR>.<CR>``, ``<LF>.<CR><LF>``,
  ``<CR><LF>.<CR>`` and ``<CR><LF><NUL>.<CR><LF>`` are all ordinary content.
  This is what defeats SMTP smuggling (CVE-2023-51764): a receiver that
  disagrees with the sender about where a message ends can be tricked into
  taking the rest of one message as a second transaction.
- Line ends: CRLF becomes LF.  A bare LF is accepted as a line end (Postfix
  3.9's ``smtpd_forbid_bare_newline = normalize``) but is remembered in
  :attr:`DotReader.bare_lf`, so the ``reject`` policy can refuse the
  message once its end is found.  A bare CR is data and is kept.
- Dot-stuffing is undone byte-faithfully: a line that starts with ``.``
  and has other characters loses that first ``.`` (``..x`` -> ``.x``,
  ``.`` + bare LF stays ``.``).
- Lines are never held whole: a line longer than ``line_length_limit`` is
  passed on in pieces (unchanged), so memory stays bounded.  A CR at the
  end of a piece is held back until the next byte shows whether it starts
  a CRLF.

BDAT (RFC 3030)
---------------
Chunks are counted, not framed, so there is nothing to smuggle: the bytes
are content as is, apart from CRLF -> LF (:class:`CrlfDecoder`).
"""

from __future__ import annotations

DOT, CR, LF = 0x2E, 0x0D, 0x0A


class DotReader:
    """Incremental DATA reader: ``feed`` raw bytes, get content bytes back.

    When the end marker has been read, :attr:`done` is True and
    :attr:`rest` holds the bytes that followed it (pipelined commands).
    """

    def __init__(self, line_limit: int = 2048) -> None:
        self.line_limit = max(line_limit, 16)
        self.done = False
        self.rest = b""
        self.bare_lf = False        # a line ended in LF without CR
        self.received = 0           # raw bytes consumed, for logs
        self._buf = bytearray()
        self._line_start = True     # _buf[0] begins a line
        self._after_crlf = True     # ... and the line before it ended in CRLF

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            raise ValueError("DotReader: data after the end of the message")
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            if self._line_start and buf[pos] == DOT:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = self._partial(buf, pos, out, dot_line=True)
                    break
                crlf = nl > pos and buf[nl - 1] == CR
                text_end = nl - 1 if crlf else nl
                if not crlf:
                    self.bare_lf = True
                if crlf and self._after_crlf and text_end - pos == 1:
                    self.done = True
                    self.rest = bytes(buf[nl + 1:])
                    self.received += nl + 1 - len(buf) + len(chunk)
                    buf.clear()
                    return b"".join(out)
                start = pos + 1 if text_end - pos > 1 else pos
                out.append(bytes(buf[start:text_end]) + b"\n")
                self._after_crlf = crlf
                pos = nl + 1
                continue
            # Everything up to the next line that starts with a dot, or up
            # to the last complete line, needs only its line ends converted.
            seg_end = buf.find(b"\n.", pos)
            if seg_end < 0:
                seg_end = buf.rfind(b"\n", pos)
                if seg_end < 0:
                    pos = self._partial(buf, pos, out, dot_line=False)
                    break
            region = bytes(buf[pos:seg_end + 1])
            if region.count(b"\n") != region.count(b"\r\n"):
                self.bare_lf = True
            out.append(region.replace(b"\r\n", b"\n"))
            self._after_crlf = seg_end > pos and buf[seg_end - 1] == CR
            self._line_start = True
            pos = seg_end + 1
        del buf[:pos]
        self.received += len(chunk)
        return b"".join(out)

    def _partial(self, buf: bytearray, pos: int, out: list[bytes], *, dot_line: bool) -> int:
        """No line end in sight: pass on a long line's text so far (keeping
        a trailing CR back), or wait for more.  Returns the new position."""
        if len(buf) - pos <= self.line_limit:
            return pos
        end = len(buf) - 1 if buf[-1] == CR else len(buf)
        # A long line that starts with "." has other characters: unstuff it.
        start = pos + 1 if dot_line else pos
        out.append(bytes(buf[start:end]))
        self._line_start = False
        return end


class CrlfDecoder:
    """BDAT content: CRLF -> LF across chunk boundaries, everything else kept."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        data = b"\r" + chunk if self._cr else chunk
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n")

    def finish(self) -> bytes:
        """The held-back CR, if the content ended with one."""
        held, self._cr = self._cr, False
        return b"\r" if held else b""
