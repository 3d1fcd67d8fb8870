"""RFC 5322 address lists: the one parser for addresses in headers and arguments.

Every place that takes addresses out of text uses it: ``sendmail``'s
recipient arguments and ``-t`` headers, ``sendmail -bv``, and cleanup's
recipient extraction and header rewriting.  A recipient never vanishes:
text is either parsed into every mailbox it holds, or refused with
:class:`~postpy.mail.address.AddressError` saying what is wrong.

:func:`parse_address_list` reads ``address-list`` (RFC 5322 section 3.4)
with the obsolete forms of section 4.4, plus what mail software writes
for local mail:

- mailboxes ``local@domain``, and bare local parts ``root`` (an
  unqualified address, completed with ``@$myorigin`` later);
- display names ``Name <addr>`` (phrases of atoms, quoted strings and
  dots; RFC 2047 encoded words are atoms and are left as they are);
- quoted local parts ``"a b"@x``, ``"a@b"@x``; obsolete local parts with
  white space or quoted words between dots (``a . "b"@x``);
- address literals ``[192.0.2.1]`` and ``[IPv6:2001:db8::1]`` (the
  domain must pass :func:`~postpy.mail.address.valid_domain`);
- comments ``(...)``, nested and with quoted pairs, anywhere white
  space may be; folded lines (CR/LF before white space) are white space;
- groups ``name: a, b;`` (empty ones like ``undisclosed-recipients:;``
  give no mailbox; a missing final ``;`` is tolerated);
- obsolete routes ``<@a,@b:x@y>`` (the route is dropped, as RFC 5321
  section 4.1.1.3 says) and empty list members ``a, , b``.

Each :class:`Mailbox` gives the address in canonical form (the local
part quoted only when it must be, see
:func:`~postpy.mail.address.quote_local`) and where it stands in the
text, so that :func:`qualify_address_list` can complete unqualified
addresses in a header in place, and :func:`replace_addresses` can put
other addresses in their place (cleanup's canonical mapping and
masquerading), keeping display names, comments and folding exactly as
written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postpy.mail.address import AddressError, quote_local, unquote_local, valid_domain

__all__ = ["AddressError", "Mailbox", "parse_address_list", "addresses", "qualify_address_list",
           "replace_addresses"]

WSP = " \t\r\n"
SPECIAL_TOKENS = "<>:;@,."          # the specials that are tokens of their own
MAX_SHOWN = 60                      # characters of the input quoted in an error


@dataclass(frozen=True)
class Mailbox:
    address: str        # canonical: quoted local part as needed, "@domain" when there is one
    local: str          # the local part unquoted
    domain: str         # "" for an unqualified address
    display: str        # the display name as written ("" when none)
    group: str          # the group's display name as written ("" outside a group)
    start: int          # span of the addr-spec in the text ...
    end: int
    local_end: int      # ... and where its local part ends (where "@domain" goes)


@dataclass(frozen=True)
class _Token:
    kind: str           # "atom", "quoted", "literal", or one of SPECIAL_TOKENS
    text: str           # as written (quotes and brackets included)
    start: int
    end: int


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")


def _control(ch: str) -> bool:
    return (ord(ch) < 0x20 and ch not in WSP) or ch == "\x7f"


def _scan_delimited(text: str, start: int, close: str, what: str) -> int:
    """Index just past the ``close`` character that ends the quoted string
    or domain literal opening at ``start``; quoted pairs are skipped."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or _control(text[i + 1]):
                break
            i += 2
            continue
        if ch == close:
            return i + 1
        if _control(ch) or (close == "]" and ch == "["):
            raise AddressError(f"bad character {ch!r} in {what} at column {i + 1}")
        i += 1
    raise AddressError(f"unterminated {what} at column {start + 1}")


def comment_end(text: str, start: int) -> int | None:
    """Index just past the (possibly nested) comment opening at ``start``;
    None when it is not closed.  aliases(5) parsing uses it too."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _skip_comment(text: str, start: int) -> int:
    end = comment_end(text, start)
    if end is None:
        raise AddressError(f"unterminated comment at column {start + 1}")
    return end


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in WSP:
            i += 1
        elif ch == "(":
            i = _skip_comment(text, i)
        elif ch == '"':
            end = _scan_delimited(text, i, '"', "quoted string")
            tokens.append(_Token("quoted", text[i:end], i, end))
            i = end
        elif ch == "[":
            end = _scan_delimited(text, i, "]", "domain literal")
            tokens.append(_Token("literal", text[i:end], i, end))
            i = end
        elif ch in SPECIAL_TOKENS:
            tokens.append(_Token(ch, ch, i, i + 1))
            i += 1
        elif ch in ")]\\" or _control(ch):
            raise AddressError(f"unexpected {ch!r} at column {i + 1}")
        else:
            start = i
            while i < n and not (text[i] in WSP or text[i] in SPECIAL_TOKENS
                                 or text[i] in '()[]"\\' or _control(text[i])):
                i += 1
            tokens.append(_Token("atom", text[start:i], start, i))
    return tokens


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    # -- tokens ---------------------------------------------------------------
    def peek(self) -> str:
        """The kind of the next token, "" at the end."""
        return self.tokens[self.pos].kind if self.pos < len(self.tokens) else ""

    def error(self, what: str) -> AddressError:
        if self.pos < len(self.tokens):
            tok = self.tokens[self.pos]
            return AddressError(f"{what} at column {tok.start + 1} ({_shown(tok.text)})")
        return AddressError(f"{what} at the end")

    def expect(self, kind: str) -> _Token:
        if self.peek() != kind:
            raise self.error(f"expected {kind!r}")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def phrase(self) -> list[_Token]:
        """Words and dots: a display name, or the local part of an addr-spec."""
        start = self.pos
        while self.peek() in ("atom", "quoted", "."):
            self.pos += 1
        return self.tokens[start:self.pos]

    def span(self, words: list[_Token]) -> str:
        return self.text[words[0].start:words[-1].end] if words else ""

    # -- grammar --------------------------------------------------------------
    def address_list(self) -> list[Mailbox]:
        found: list[Mailbox] = []
        while True:
            while self.peek() == ",":          # obs-addr-list: empty members
                self.pos += 1
            if not self.peek():
                return found
            found.extend(self.address(group=None))
            if self.peek() and self.peek() != ",":
                raise self.error("expected ',' between addresses")

    def address(self, group: str | None) -> list[Mailbox]:
        """One list member: a mailbox, or (outside a group) a whole group."""
        words = self.phrase()
        kind = self.peek()
        if kind == "<":
            return [self.angle_addr(self.span(words), group or "")]
        if kind == ":" and words:
            if group is not None:
                raise self.error("a group inside a group")
            self.pos += 1
            return self.group_members(self.span(words))
        return [self.addr_spec(words, "", group or "")]

    def group_members(self, name: str) -> list[Mailbox]:
        members: list[Mailbox] = []
        while True:
            while self.peek() == ",":
                self.pos += 1
            kind = self.peek()
            if kind == ";":
                self.pos += 1
                return members
            if not kind:
                return members                   # tolerated: no final ";"
            members.extend(self.address(group=name))
            if self.peek() not in (",", ";", ""):
                raise self.error("expected ',' or ';' in a group")

    def angle_addr(self, display: str, group: str) -> Mailbox:
        self.expect("<")
        if self.peek() in ("@", ","):
            self.route()
        if self.peek() == ">":
            raise self.error("empty address")
        mailbox = self.addr_spec(self.phrase(), display, group)
        self.expect(">")
        return mailbox

    def route(self) -> None:
        """obs-route: ``@a,@b:`` before the mailbox; checked, then dropped."""
        while True:
            while self.peek() == ",":
                self.pos += 1
            self.expect("@")
            self.domain()
            if self.peek() == ":":
                self.pos += 1
                return
            if self.peek() != ",":
                raise self.error("bad route")

    def domain(self) -> tuple[str, int]:
        """A domain after "@": (the domain, where it ends)."""
        if self.peek() == "literal":
            tok = self.tokens[self.pos]
            self.pos += 1
            domain = "".join(ch for ch in tok.text if ch not in WSP)
            end = tok.end
        else:
            if self.peek() != "atom":
                raise self.error("expected a domain")
            parts = [self.expect("atom")]
            while self.peek() == "." and self.pos + 1 < len(self.tokens) \
                    and self.tokens[self.pos + 1].kind == "atom":
                self.pos += 1
                parts.append(self.expect("atom"))
            domain = ".".join(p.text for p in parts)
            end = parts[-1].end
        if not valid_domain(domain, utf8=True):
            raise AddressError(f"bad domain {_shown(domain)}")
        return domain, end

    def addr_spec(self, words: list[_Token], display: str, group: str) -> Mailbox:
        """``local@domain`` or a bare local part, from the words already read."""
        if not words:
            raise self.error("expected an address")
        for i, tok in enumerate(words):
            if (tok.kind == ".") != (i % 2 == 1) or words[-1].kind == ".":
                raise AddressError(f"bad local part {_shown(self.span(words))}")
        local = "".join(unquote_local(tok.text) if tok.kind == "quoted" else tok.text
                        for tok in words)
        if not local or _has_surrogate(local):
            raise AddressError(f"bad local part {_shown(self.span(words))}")
        domain, end = "", words[-1].end
        if self.peek() == "@":
            self.pos += 1
            domain, end = self.domain()
        address = quote_local(local) + (f"@{domain}" if domain else "")
        return Mailbox(address, local, domain, display, group,
                       words[0].start, end, words[-1].end)


def parse_address_list(text: str) -> list[Mailbox]:
    """Every mailbox in an address list (see the module text); raises AddressError."""
    return _Parser(text).address_list()


def addresses(values: Iterable[str]) -> list[str]:
    """The addresses in several address lists, in order; raises AddressError
    naming the list that cannot be parsed."""
    found: list[str] = []
    for value in values:
        try:
            found.extend(m.address for m in parse_address_list(value))
        except AddressError as exc:
            raise AddressError(f"{_shown(value)}: {exc}") from None
    return found


def qualify_address_list(text: str, domain: str) -> str | None:
    """``text`` with ``@domain`` after each unqualified address, or None when
    there is none (or no domain to add).  Everything else stays as written:
    ``root (Cron Daemon)`` becomes ``root@domain (Cron Daemon)``.  Raises
    AddressError when the text is not an address list."""
    if not domain:
        return None
    points = [m.local_end for m in parse_address_list(text) if not m.domain]
    if not points:
        return None
    out: list[str] = []
    last = 0
    for at in points:
        out.append(text[last:at])
        out.append(f"@{domain}")
        last = at
    out.append(text[last:])
    return "".join(out)


def replace_addresses(text: str, rewrite: Callable[[Mailbox], str]) -> str | None:
    """``text`` with each address replaced by ``rewrite(mailbox)``, or None
    when no address changes.  Only the addr-spec is replaced: ``Name
    <a@x> (comment)`` becomes ``Name <b@y> (comment)``.  Raises
    AddressError when the text is not an address list."""
    out: list[str] = []
    last = 0
    for mailbox in parse_address_list(text):
        new = rewrite(mailbox)
        if new == mailbox.address:
            continue
        out.append(text[last:mailbox.start])
        out.append(new)
        last = mailbox.end
    if not out:
        return None
    out.append(text[last:])
    return "".join(out)
