"""8-bit content made 7-bit for a server without 8BITMIME (RFC 6152 section 3).

The smtp client calls :func:`to_7bit` when a message has 8-bit content and
the server does not offer 8BITMIME (unless ``disable_mime_output_conversion
= yes``).  The MIME tree is walked on the raw bytes, so everything that
needs no change -- header fields, their folding, boundaries, preambles,
7-bit parts -- goes out byte for byte.  Header blocks are read with the
stdlib ``email`` package (compat32) for the Content-Type and its boundary.

Each leaf part whose body has 8-bit bytes is re-encoded: quoted-printable
for ``text/*``, base64 for everything else, with its
Content-Transfer-Encoding field replaced.  A converted part without a
Content-Type gets ``text/plain; charset=unknown-8bit`` (RFC 1428; the
default us-ascii would be wrong), and a top-level entity without
MIME-Version gets ``MIME-Version: 1.0``.  8-bit bytes in header fields are
left alone: those are SMTPUTF8's business.

Content is taken and returned with LF line ends (CRLF is accepted); the
client adds CRLF and dot-stuffing.
"""

from __future__ import annotations

import base64
import binascii
import re
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

_EIGHTBIT = re.compile(rb"[\x80-\xff]")
_IDENTITY = ("", "7bit", "8bit", "binary")
_NESTING_LIMIT = 100


class _Unsafe(Exception):
    """A form that cannot be converted without guessing: send as is."""


def to_7bit(content: bytes) -> bytes | None:
    """The content with every 8-bit body part re-encoded, or None.

    None means: nothing to convert (the body is 7-bit already; 8-bit bytes
    only in headers), or a form that cannot be converted safely, in which
    case the caller keeps sending the content as it is.  Such forms are an
    8-bit message/* part (its inner headers cannot be encoded), a
    multipart with a Content-Transfer-Encoding other than 7bit, 8bit or binary, a
    multipart without a usable boundary or with 8-bit preamble/epilogue
    text, and a part that claims base64/quoted-printable (or an unknown
    encoding) but has 8-bit bytes.
    """
    data = content.replace(b"\r\n", b"\n")
    if not _EIGHTBIT.search(data):
        return None
    try:
        converted = _entity(data, "text/plain", top=True, depth=0)
    except _Unsafe:
        return None
    return None if converted == data else converted


def _split(data: bytes) -> tuple[bytes, bytes | None]:
    """Header block (each field ending in LF) and body (None: no empty line)."""
    if data.startswith(b"\n"):
        return b"", data[1:]
    end = data.find(b"\n\n")
    if end < 0:
        return data, None
    return data[:end + 1], data[end + 2:]


def _fields(head: bytes) -> list[bytes]:
    """Raw header fields, continuation lines included, each ending in LF."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _entity(data: bytes, default_type: str, *, top: bool, depth: int) -> bytes:
    if depth > _NESTING_LIMIT:
        raise _Unsafe("MIME nesting too deep")
    head, body = _split(data)
    if body is None or not _EIGHTBIT.search(body):
        return data
    info: Message = BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\n")
    info.set_default_type(default_type)
    ctype = info.get_content_type()
    cte = str(info.get("Content-Transfer-Encoding", "")).strip().lower()
    if ctype.startswith("multipart/"):
        if cte not in ("", "7bit", "8bit", "binary"):
            raise _Unsafe(f"multipart with encoding {cte}")
        boundary = info.get_boundary()
        if not boundary:
            raise _Unsafe("multipart without boundary")
        child_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        new_body = _multipart(body, boundary.encode("ascii", "surrogateescape"), child_type, depth)
        if cte in ("8bit", "binary"):
            # Many mail programs label the multipart itself 8bit; once its
            # parts are converted, that label becomes 7bit (RFC 2045 6.4).
            kept = [f for f in _fields(head) if _name(f) != b"content-transfer-encoding"]
            head = b"".join(kept) + b"Content-Transfer-Encoding: 7bit\n"
        return head + b"\n" + new_body
    if ctype.startswith("message/"):
        raise _Unsafe(f"8-bit {ctype} part")
    if cte not in _IDENTITY:
        raise _Unsafe(f"8-bit content with encoding {cte}")
    if info.get_content_maintype() == "text":
        encoding, new_body = "quoted-printable", _qp(body)
    else:
        encoding, new_body = "base64", _b64(body)
    kept = [f for f in _fields(head) if _name(f) != b"content-transfer-encoding"]
    if top and "MIME-Version" not in info:
        kept.append(b"MIME-Version: 1.0\n")
    if "Content-Type" not in info:
        kept.append(b"Content-Type: text/plain; charset=unknown-8bit\n")
    kept.append(f"Content-Transfer-Encoding: {encoding}\n".encode("ascii"))
    return b"".join(kept) + b"\n" + new_body


def _multipart(body: bytes, boundary: bytes, child_type: str, depth: int) -> bytes:
    """Convert each body part; delimiters, preamble and epilogue stay as they are."""
    lines = body.split(b"\n")
    delim = b"--" + boundary
    marks: list[int] = []          # indexes of delimiter lines
    close = -1
    for i, line in enumerate(lines):
        if not line.startswith(delim):
            continue
        rest = line[len(delim):]
        if rest.startswith(b"--"):
            close = i
            break
        if not rest.strip(b" \t"):
            marks.append(i)
    if not marks:
        raise _Unsafe("multipart without a delimiter line")
    end = close if close >= 0 else len(lines)
    outside = lines[:marks[0]] + (lines[close + 1:] if close >= 0 else [])
    if any(_EIGHTBIT.search(line) for line in outside):
        raise _Unsafe("8-bit multipart preamble or epilogue")
    # The LF before a delimiter belongs to the delimiter (RFC 2046 section
    # 5.1.1), so joining lines with LF puts every piece back where it was.
    pieces = lines[:marks[0]]
    for start, stop in zip(marks, [*marks[1:], end], strict=True):
        pieces.append(lines[start])
        if stop > start + 1:
            part = b"\n".join(lines[start + 1:stop])
            pieces.append(_entity(part, child_type, top=False, depth=depth + 1))
    pieces.extend(lines[close:] if close >= 0 else [])
    return b"\n".join(pieces)


def _qp(body: bytes) -> bytes:
    """Quoted-printable with LF line breaks kept; a lone CR is encoded too."""
    return binascii.b2a_qp(body, istext=True).replace(b"\r", b"=0D")


def _b64(body: bytes) -> bytes:
    """Base64 in 76-column lines, ending in LF only where the body did."""
    encoded = base64.encodebytes(body)
    return encoded if body.endswith(b"\n") else encoded.rstrip(b"\n")
