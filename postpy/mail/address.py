"""Mail addresses: split, quote, unquote and check them (RFC 5321/5322/6531).

Shared mail knowledge, no daemon logic: smtpd checks MAIL FROM/RCPT TO
paths with it, the smtp client quotes local parts with it, cleanup and
local split addresses with it.  Addresses are ``str``; bytes that were not
valid UTF-8 arrive as surrogate escapes and are never valid here.

Terms (RFC 5321 section 4.1.2)::

    Path      = "<" [ A-d-l ":" ] Mailbox ">"    A-d-l = At-domain *( "," At-domain )
    Mailbox   = Local-part "@" ( Domain / address-literal )
    Local-part = Dot-string / Quoted-string

- :func:`split_address` splits at the last ``@`` outside a quoted string,
  so ``"a@b"@example.org`` has the local part ``"a@b"``.
- :func:`unquote_local` gives the local part as the mailbox owner knows it
  (quotes and backslashes removed); :func:`quote_local` is its inverse.
- :func:`has_routing` says whether an unquoted local part asks for
  sender-specified routing (``%``, ``!`` or ``@``), which a relay must not
  honour for untrusted clients.
- :func:`parse_path` checks the text between ``<`` and ``>`` and strips a
  source route: RFC 5321 section 4.1.1.3 says a server SHOULD ignore it
  and deliver to the mailbox, which is also what keeps ``@a:b@c`` from
  being a relay trick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:      # imported when needed: sendmail's start-up stays cheap
    import ipaddress

# RFC 5322 atext, US-ASCII part.
ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
ROUTING_CHARS = ("@", "%", "!")
MAX_DOMAIN = 255
MAX_LABEL = 63


class AddressError(ValueError):
    """A malformed address or path; str() says what is wrong."""


def is_ascii(text: str) -> bool:
    return text.isascii()


def _utf8_char(ch: str) -> bool:
    """A non-ASCII character that came from valid UTF-8 (not a surrogate escape)."""
    return ord(ch) > 0x7F and not 0xD800 <= ord(ch) <= 0xDFFF


def _atext(ch: str, utf8: bool) -> bool:
    return ch in ATEXT or (utf8 and _utf8_char(ch))


def is_dot_string(text: str, *, utf8: bool = False) -> bool:
    """``Atom *("." Atom)``: no empty atom, so no leading, trailing or double dot."""
    if not text:
        return False
    return all(atom and all(_atext(ch, utf8) for ch in atom) for atom in text.split("."))


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted string that opens at ``text[start]``, or -1."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    return -1


def is_quoted_string(text: str, *, utf8: bool = False) -> bool:
    """RFC 5321 Quoted-string: qtextSMTP and quoted-pairSMTP between DQUOTEs."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return False
    i, end = 1, len(text) - 1
    while i < end:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= end or not " " <= text[i + 1] <= "~":
                return False
            i += 2
            continue
        if ch == '"' or not (" " <= ch <= "~" or (utf8 and _utf8_char(ch))):
            return False
        i += 1
    return True


def valid_local_part(local: str, *, utf8: bool = False) -> bool:
    return is_dot_string(local, utf8=utf8) or is_quoted_string(local, utf8=utf8)


def split_address(address: str) -> tuple[str, str]:
    """(local part as written, domain) at the last ``@`` outside quotes.

    The domain is empty when there is no such ``@``.
    """
    at = -1
    i = 0
    while i < len(address):
        ch = address[i]
        if ch == '"':
            end = _quoted_end(address, i)
            if end < 0:
                break
            i = end
            continue
        if ch == "\\":
            i += 2
            continue
        if ch == "@":
            at = i
        i += 1
    if at < 0:
        return address, ""
    return address[:at], address[at + 1:]


def unquote_local(local: str) -> str:
    """The local part with quoting undone: ``"a b"`` -> ``a b``, ``"a\\"b"`` -> ``a"b``."""
    if '"' not in local and "\\" not in local:
        return local
    out: list[str] = []
    i = 0
    while i < len(local):
        ch = local[i]
        if ch == "\\" and i + 1 < len(local):
            out.append(local[i + 1])
            i += 2
            continue
        if ch != '"':
            out.append(ch)
        i += 1
    return "".join(out)


def quote_local(local: str) -> str:
    """The local part as written in an address: quoted when it is not a dot-string."""
    if is_dot_string(local, utf8=True):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def join_address(local: str, domain: str) -> str:
    """An address from an unquoted local part and a domain."""
    quoted = quote_local(local)
    return f"{quoted}@{domain}" if domain else quoted


def has_routing(local: str) -> bool:
    """Does an unquoted local part ask for routing elsewhere (``user%host``,
    ``host!user``, ``user@host``)?"""
    return any(ch in local for ch in ROUTING_CHARS)


def domain_literal_address(domain: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of an address literal ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    import ipaddress

    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.IPv6Address(inner[5:])
        return ipaddress.IPv4Address(inner)
    except ValueError:
        return None


def valid_hostname(domain: str, *, utf8: bool = False) -> bool:
    """LDH labels of 1..63 characters, no hyphen at either end, 255 in all;
    with ``utf8`` (SMTPUTF8, RFC 6531) labels may also hold U-label characters."""
    if not domain or len(domain.encode("utf-8", "surrogateescape")) > MAX_DOMAIN:
        return False
    for label in domain.split("."):
        if not label or len(label.encode("utf-8", "surrogateescape")) > MAX_LABEL:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if not (ch.isascii() and (ch.isalnum() or ch == "-")) and not (utf8 and _utf8_char(ch)):
                return False
    return True


def valid_domain(domain: str, *, utf8: bool = False) -> bool:
    """A host name or an address literal."""
    if domain.startswith("["):
        return domain_literal_address(domain) is not None
    return valid_hostname(domain, utf8=utf8)


def check_mailbox(mailbox: str, *, utf8: bool = False, need_domain: bool = False) -> tuple[str, str]:
    """Check ``local@domain`` (the domain may be absent unless ``need_domain``);
    return (local part as written, domain).  Raises :class:`AddressError`."""
    local, domain = split_address(mailbox)
    if not valid_local_part(local, utf8=utf8):
        raise AddressError(f"bad local part in {mailbox!r}")
    if mailbox.endswith("@") or (domain and not valid_domain(domain, utf8=utf8)):
        raise AddressError(f"bad domain in {mailbox!r}")
    if need_domain and not domain:
        raise AddressError(f"no domain in {mailbox!r}")
    return local, domain


def strip_source_route(path: str, *, utf8: bool = False) -> str:
    """``@a,@b:user@c`` -> ``user@c``; a path without a route is returned as is.

    Each route element must be ``@`` and a valid domain (RFC 5321 A-d-l).
    """
    if not path.startswith("@"):
        return path
    i = 0
    while True:
        if i >= len(path) or path[i] != "@":
            raise AddressError(f"bad source route in {path!r}")
        j = i + 1
        if j < len(path) and path[j] == "[":
            close = path.find("]", j)
            if close < 0:
                raise AddressError(f"bad source route in {path!r}")
            j = close + 1
        else:
            while j < len(path) and path[j] not in ",:":
                j += 1
        if not valid_domain(path[i + 1:j], utf8=utf8) or j >= len(path):
            raise AddressError(f"bad source route in {path!r}")
        if path[j] == ":":
            return path[j + 1:]
        if path[j] != ",":
            raise AddressError(f"bad source route in {path!r}")
        i = j + 1


def parse_path(inner: str, *, utf8: bool = False, allow_null: bool = True) -> str:
    """Check the text between ``<`` and ``>`` of a MAIL/RCPT path.

    Returns the mailbox with any source route removed, or ``""`` for the
    null path ``<>``.  Raises :class:`AddressError`.
    """
    if inner == "":
        if not allow_null:
            raise AddressError("null address not allowed")
        return ""
    mailbox = strip_source_route(inner, utf8=utf8)
    check_mailbox(mailbox, utf8=utf8)
    return mailbox
