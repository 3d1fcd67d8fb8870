"""SMTP server replies as the client sees them (RFC 5321 section 4.2).

A reply is one or more lines ``CODE-text`` ... ``CODE text``.
:class:`Reply` keeps the code and the lines; :func:`parse_line` checks one
line; :class:`Features` is what an EHLO reply announces (RFC 5321 section
4.1.1.1 and the extension RFCs).  The status code of a reply is its RFC
3463 enhanced code when it carries a valid one of the same class (RFC 2034
section 3; on the first line, else on the last), else ``X.0.0`` from the
reply code's first digit.

Pure data and parsing: no I/O here (see :mod:`postpy.smtp.client`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"([2-5][0-9][0-9])([ -]|$)(.*)", re.S)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")
MAX_REPLY_LINES = 200


class ReplyError(ValueError):
    """A line that is not an SMTP reply line; the text quotes it."""


def parse_line(line: str) -> tuple[int, bool, str]:
    """``(code, last, text)`` for one reply line without its CRLF."""
    m = _LINE.fullmatch(line)
    if not m:
        raise ReplyError(f"malformed reply: {line[:100]!r}")
    return int(m.group(1)), m.group(2) != "-", m.group(3)


@dataclass
class Reply:
    code: int
    lines: list[str] = field(default_factory=list)   # texts after "CODE-" / "CODE "

    @property
    def kind(self) -> int:
        """2, 3, 4 or 5."""
        return self.code // 100

    @property
    def ok(self) -> bool:
        return self.kind == 2

    @property
    def dsn(self) -> str:
        """Enhanced status code (RFC 3463) of this reply: from its first line, or its
        last when only that one has it (some servers, Cyrus lmtpd among them)."""
        for line in dict.fromkeys((self.lines[0], self.lines[-1]) if self.lines else ()):
            m = _ENHANCED.match(line)
            if m and m.group(1) == str(self.kind):
                return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
        return f"{self.kind}.0.0"

    def text(self) -> str:
        """All lines with their codes, joined by spaces, as logs show them:
        ``550-5.1.1 first line 550 5.1.1 last line``."""
        if not self.lines:
            return str(self.code)
        last = len(self.lines) - 1
        return " ".join(f"{self.code}{' ' if i == last else '-'}{t}".rstrip()
                        for i, t in enumerate(self.lines))


@dataclass
class Features:
    """What the server's EHLO reply announced."""

    esmtp: bool = False
    name: str = ""                 # the server's own name (first word of the first line)
    pipelining: bool = False
    size: int | None = None        # None: SIZE not offered; 0: offered without a limit
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    starttls: bool = False
    enhancedstatuscodes: bool = False
    chunking: bool = False         # RFC 3030 BDAT
    auth: tuple[str, ...] = ()     # SASL mechanisms (RFC 4954), upper case
    keywords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Features:
        feats = cls(esmtp=True)
        if reply.lines:
            feats.name = (reply.lines[0].split() or [""])[0]
        for line in reply.lines[1:]:
            words = line.split(None, 1)
            if not words:
                continue
            keyword = words[0].upper()
            arg = words[1].strip() if len(words) > 1 else ""
            feats.keywords[keyword] = arg
            if keyword == "PIPELINING":
                feats.pipelining = True
            elif keyword == "SIZE":
                feats.size = int(arg) if arg.isascii() and arg.isdigit() and len(arg) < 20 else 0
            elif keyword == "8BITMIME":
                feats.eightbitmime = True
            elif keyword == "SMTPUTF8":
                feats.smtputf8 = True
            elif keyword == "DSN":
                feats.dsn = True
            elif keyword == "STARTTLS":
                feats.starttls = True
            elif keyword == "ENHANCEDSTATUSCODES":
                feats.enhancedstatuscodes = True
            elif keyword == "CHUNKING":
                feats.chunking = True
            elif keyword == "AUTH" or keyword.startswith("AUTH="):
                # "AUTH=PLAIN LOGIN" is the pre-RFC form some servers still send.
                mechs = (keyword[5:] + " " + arg) if keyword.startswith("AUTH=") else arg
                feats.auth = tuple(dict.fromkeys(feats.auth + tuple(mechs.upper().split())))
        return feats

    @classmethod
    def from_helo(cls, reply: Reply) -> Features:
        first = reply.lines[0] if reply.lines else ""
        return cls(esmtp=False, name=(first.split() or [""])[0])
