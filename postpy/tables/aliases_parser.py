"""aliases(5): parse alias source text and split alias values into targets.

Read by postalias(1)/newaliases (to build ``FILE.lmdb``) and by local
delivery, which splits a stored value back into its targets at delivery
time and parses ``:include:`` files (right-hand-side syntax only) with the
same code.

Source syntax (see COMPAT.md section 5):

- logical lines as in :mod:`postpy.tables.source_parser` (``#`` comments
  only as the first non-blank character; indented lines continue an entry;
  blank and comment lines inside an entry do not end it);
- an entry is ``name: value, value, ...``.  The line is tokenized in the
  manner of RFC 822 (section 3.3): double-quoted strings, ``(comments)``,
  ``<route addresses>`` and ``[domain literals]`` are single units, so a
  quoted name may hold ``:``, ``#``, ``@`` or white space and a quoted value
  may hold commas and white space (``"|/usr/bin/procmail -a x"``);
- the name is everything before the first unquoted ``:``; it is stored in
  internal (unquoted) form, folded to lower case unless asked otherwise;
- malformed entries are skipped with a warning ``SOURCE, line N: ...``: no
  colon, nothing before or after it, or a comma before it ("need name:value
  pair"); an unquoted ``@`` or ``%`` in the name ("name must be local and
  have no domain").  A duplicate name warns and the first one wins (see
  :func:`postpy.tables.source_parser.dedupe` for the -r/-w policies).

Stored value: the targets in external (still quoted) form joined by
``", "``, so :func:`split_value` gives back exactly the same targets.
Comments are dropped, and of ``Full Name <addr>`` only ``<addr>`` is kept.
Unquoted white space inside a target collapses to one space, so an unquoted
``|/bin/cmd arg`` still works (Postfix asks for quotes; so do we, in docs).

Target kinds, decided on the internal (unquoted) form, as local(8) does:
``:include:/path`` (case-insensitive prefix) -> include; ``|command`` ->
command; ``/path`` -> file (a trailing ``/`` means Maildir, which is local
delivery's business); ``\\user`` (a leading backslash in the source) ->
mailbox, deliver to the user's mailbox without further alias expansion
(Sendmail semantics); anything else -> address.  A quoted local part with a
domain (``"|x"@example.com``) is always an address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.mail.addrlist import comment_end
from postpy.tables.source_parser import DUP_WARN, Entry, dedupe, logical_lines

ADDRESS = "address"
COMMAND = "command"
FILE = "file"
INCLUDE = "include"
MAILBOX = "mailbox"
KINDS = (ADDRESS, COMMAND, FILE, INCLUDE, MAILBOX)


@dataclass(frozen=True)
class Target:
    """One destination from an alias value.

    ``value`` is the internal form without the kind marker: the address, the
    command line (no ``|``), the file path, the include path (no
    ``:include:``) or the user name (no ``\\``).  ``raw`` is the external
    form as stored in the table.  An address is in internal form
    (``"john doe"@example.com`` gives ``john doe@example.com``): quote the
    local part again when it goes back on the wire.
    """

    kind: str
    value: str
    raw: str


@dataclass(frozen=True)
class AliasEntry:
    """``name: targets`` from the source, with the line the entry starts on."""

    name: str
    targets: list[str]
    line: int

    @property
    def value(self) -> str:
        """The string stored in the table."""
        return join_targets(self.targets)


@dataclass
class AliasParseResult:
    entries: list[AliasEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- tokenizer ---------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str   # "word", "quoted", "comment", "space", or one of , : < >
    text: str   # raw text as written (an unterminated quote gets its closing quote)


_SPECIALS = ",:<>"
_STOP = ' \t\r\n"(' + _SPECIALS


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    j = i + 1
    while j < len(s):
        if s[j] == "\\":
            if j + 1 == len(s):     # unclosed, ends in a lone "\": keep it a literal "\"
                return s[i:] + '\\"', len(s)
            j += 2
            continue
        if s[j] == '"':
            return s[i:j + 1], j + 1
        j += 1
    return s[i:] + '"', len(s)


def _scan_comment(s: str, i: int) -> tuple[str, int]:
    end = comment_end(s, i)
    if end is None:
        return s[i:], len(s)
    return s[i:end], end


def _scan_word(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] not in _STOP:
        if s[j] == "\\" and j + 1 < len(s):
            j += 2
            continue
        if s[j] == "[":             # domain literal: [IPv6:::1] is one unit
            end = s.find("]", j)
            j = len(s) if end < 0 else end + 1
            continue
        j += 1
    return s[i:j], j


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in " \t\r\n":
            j = i
            while j < len(s) and s[j] in " \t\r\n":
                j += 1
            toks.append(_Tok("space", " "))
            i = j
        elif ch == '"':
            text, i = _scan_quoted(s, i)
            toks.append(_Tok("quoted", text))
        elif ch == "(":
            text, i = _scan_comment(s, i)
            toks.append(_Tok("comment", text))
        elif ch in _SPECIALS:
            toks.append(_Tok(ch, ch))
            i += 1
        else:
            text, i = _scan_word(s, i)
            toks.append(_Tok("word", text))
    return toks


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _clean(toks: list[_Tok]) -> list[_Tok]:
    """Drop comments and merge/strip white space."""
    out: list[_Tok] = []
    for tok in toks:
        if tok.kind == "comment":
            continue
        if tok.kind == "space" and (not out or out[-1].kind == "space"):
            continue
        out.append(tok)
    while out and out[-1].kind == "space":
        out.pop()
    return out


def _external(toks: list[_Tok]) -> str:
    return "".join(tok.text for tok in toks)


def _internal(toks: list[_Tok]) -> str:
    parts: list[str] = []
    for tok in toks:
        if tok.kind == "quoted":
            parts.append(_unescape(tok.text[1:-1]))
        elif tok.kind == "word":
            parts.append(_unescape(tok.text))
        else:
            parts.append(tok.text)
    return "".join(parts)


def _split_commas(toks: list[_Tok]) -> list[list[_Tok]]:
    """Split a value at top-level commas (not inside ``<...>``)."""
    groups: list[list[_Tok]] = [[]]
    depth = 0
    for tok in toks:
        if tok.kind == "<":
            depth += 1
        elif tok.kind == ">" and depth:
            depth -= 1
        elif tok.kind == "," and depth == 0:
            groups.append([])
            continue
        groups[-1].append(tok)
    return groups


def _route_addr(toks: list[_Tok]) -> list[_Tok]:
    """``Phrase <addr>`` -> ``<addr>``: the phrase is dropped (RFC 822 section 6.1)."""
    if not toks or (toks[0].kind == "word" and toks[0].text.startswith("|")):
        return toks
    kinds = [tok.kind for tok in toks]
    if "<" not in kinds:
        return toks
    start = kinds.index("<")
    # The ">" that closes it, counted as _split_commas counts: a stored value
    # must split at the same commas again.
    depth, end = 0, -1
    for i in range(start, len(kinds)):
        if kinds[i] == "<":
            depth += 1
        elif kinds[i] == ">":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        return toks
    # Keep the brackets in the external form: a source route may hold commas.
    return [toks[start], *_clean(toks[start + 1:end]), toks[end]]


# --- targets -----------------------------------------------------------------

def _classify(toks: list[_Tok]) -> Target | None:
    toks = _route_addr(_clean(toks))
    if not toks:
        return None
    raw = _external(toks)
    if toks[0].kind == "<" and toks[-1].kind == ">":
        toks = toks[1:-1]
    internal = _internal(toks)
    if not internal.strip():
        return None
    if raw.startswith("\\"):
        return Target(MAILBOX, internal, raw)
    # A quoted local part followed by @domain is an address whatever it says.
    quoted_with_domain = toks[0].kind == "quoted" and any(
        tok.kind == "word" and tok.text.startswith("@") for tok in toks[1:])
    if not quoted_with_domain:
        if internal[:9].lower() == ":include:":
            return Target(INCLUDE, internal[9:].strip(), raw)
        if internal.startswith("|"):
            return Target(COMMAND, internal[1:].strip(), raw)
        if internal.startswith("/"):
            return Target(FILE, internal, raw)
    return Target(ADDRESS, internal, raw)


def _targets(toks: list[_Tok]) -> list[Target]:
    found: list[Target] = []
    for group in _split_commas(toks):
        target = _classify(group)
        if target is not None:
            found.append(target)
    return found


def parse_value(value: str) -> list[Target]:
    """Split a right-hand side (stored value or source text) into targets."""
    return _targets(_tokenize(value))


def split_value(value: str) -> list[str]:
    """The targets of a value in external form (what the table stores)."""
    return [target.raw for target in parse_value(value)]


def join_targets(targets: list[str]) -> str:
    return ", ".join(targets)


def parse_target(text: str) -> Target | None:
    """Classify one target string (external form; the first one if the text
    holds several); None when it is empty."""
    found = parse_value(text)
    return found[0] if found else None


def parse_include(text: str) -> list[Target]:
    """Targets of an ``:include:`` file: right-hand-side syntax, one or more
    per line, ``#`` comment lines and blank lines ignored."""
    found: list[Target] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            found.extend(parse_value(stripped))
    return found


# --- source files ------------------------------------------------------------

def _has_domain(toks: list[_Tok]) -> bool:
    return any(tok.kind == "word" and ("@" in tok.text or "%" in tok.text) for tok in toks)


def _parse_line(line: str, number: int, source: str, fold_case: bool,
                warnings: list[str]) -> AliasEntry | None:
    toks = _tokenize(line)
    colon = next((i for i, tok in enumerate(toks) if tok.kind == ":"), None)
    if colon is None:
        warnings.append(f"{source}, line {number}: need name:value pair")
        return None
    key_toks = _clean(toks[:colon])
    if any(tok.kind == "," for tok in key_toks):
        warnings.append(f"{source}, line {number}: need name:value pair")
        return None
    name = _internal(key_toks).strip()
    targets = _targets(toks[colon + 1:])
    if not name or not targets:
        warnings.append(f"{source}, line {number}: need name:value pair")
        return None
    if _has_domain(key_toks):
        warnings.append(f"{source}, line {number}: name must be local and have no domain")
        return None
    if fold_case:
        name = name.lower()
    return AliasEntry(name, [target.raw for target in targets], number)


def parse_aliases(text: str, source: str = "aliases", *, fold_case: bool = True,
                  duplicates: str = DUP_WARN, utf8_check: bool = True) -> AliasParseResult:
    """Parse aliases(5) text; malformed entries become warnings and are skipped."""
    result = AliasParseResult()
    parsed: dict[tuple[str, int], AliasEntry] = {}
    plain: list[Entry] = []
    for number, line in logical_lines(text, source, result.warnings, utf8_check=utf8_check):
        entry = _parse_line(line, number, source, fold_case, result.warnings)
        if entry is not None:
            parsed[(entry.name, entry.line)] = entry
            plain.append(Entry(entry.name, entry.value, entry.line))
    kept = dedupe(plain, duplicates, result.warnings, source)
    result.entries = [parsed[(e.key, e.line)] for e in kept]
    return result
