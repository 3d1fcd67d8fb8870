"""Lookup-table source files: the ``key value`` text that postmap indexes.

postmap(1) reads this syntax to build an lmdb table, and the ``texthash:``
table type reads it directly.  The aliases(5) parser shares the logical-line
rules and the duplicate policy defined here.

Logical lines (the same for both source formats):

- an empty or white-space-only line is ignored, as is a line whose first
  non-blank character is ``#`` (a ``#`` later in a line is ordinary text);
- a line that starts with white space continues the current logical line:
  the newline is dropped and the leading white space kept;  ignored lines
  between a logical line and its continuation do not end it;
- an indented line with no logical line before it draws the warning
  "logical line must not start with whitespace" and is dropped;
- a line that is not valid UTF-8 (when UTF-8 checks are on) is dropped with
  a warning, as Postfix does with ``smtputf8_enable = yes``.

``key value`` entries: the key is the first word, the value the rest with
surrounding white space removed.  A key may be put in double quotes to hold
white space; inside the quotes ``\\"`` and ``\\\\`` stand for ``"`` and
``\\``.  A line without a value warns "expected format: key whitespace
value" and is skipped.  Keys are folded to lower case unless the caller
asks otherwise.

Duplicate keys follow one of three policies: ``warn`` (the default: warn,
keep the first), ``replace`` (keep the last, silently; postmap -r) and
``ignore`` (keep the first, silently; postmap -w).

Nothing here touches a database: parsers return entries and warning texts,
and the caller decides where the warnings go.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

DUP_WARN = "warn"
DUP_REPLACE = "replace"
DUP_IGNORE = "ignore"
DUP_POLICIES = (DUP_WARN, DUP_REPLACE, DUP_IGNORE)

_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Entry:
    """One table entry and the source line it started on."""

    key: str
    value: str
    line: int


@dataclass
class ParseResult:
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def decode_source(data: bytes) -> str:
    """Bytes of a source file as text; bytes that are not UTF-8 survive as
    surrogate escapes, so :func:`logical_lines` can find and report them."""
    return data.decode("utf-8", "surrogateescape")


def read_source_file(path: str) -> str:
    """Read a source file (raises OSError, which the caller reports)."""
    with open(path, "rb") as fh:
        return decode_source(fh.read())


def logical_lines(text: str, source: str, warnings: list[str], *,
                  utf8_check: bool = True) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, logical line)``, trailing white space removed."""
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if utf8_check and _SURROGATE.search(line):
            warnings.append(f"{source}, line {number}: non-UTF-8 input -- ignoring this line")
            continue
        if line[0] in " \t":
            if not current:
                warnings.append(f"{source}, line {number}: logical line must not start with whitespace")
                continue
            current.append(line)
            continue
        if current:
            yield start, "".join(current).rstrip()
        current, start = [line], number
    if current:
        yield start, "".join(current).rstrip()


def dedupe(entries: Iterable[Entry], policy: str, warnings: list[str], source: str) -> list[Entry]:
    """Apply a duplicate-key policy; the result keeps first-seen order."""
    if policy not in DUP_POLICIES:
        raise ValueError(f"unknown duplicate policy: {policy!r}")
    kept: dict[str, Entry] = {}
    for entry in entries:
        first = kept.get(entry.key)
        if first is None:
            kept[entry.key] = entry
        elif policy == DUP_REPLACE:
            kept[entry.key] = entry
        elif policy == DUP_WARN:
            warnings.append(f"{source}, line {entry.line}: duplicate entry: \"{entry.key}\""
                            f" (first on line {first.line}; keeping the first)")
    return list(kept.values())


def _split_quoted_key(line: str) -> tuple[str, str] | None:
    """``"key with space" value`` -> (key, rest); None when malformed."""
    chars: list[str] = []
    i = 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            chars.append(line[i + 1])
            i += 2
            continue
        if ch == '"':
            rest = line[i + 1:]
            if rest and not rest[0].isspace():
                return None
            return "".join(chars), rest
        chars.append(ch)
        i += 1
    return None


def split_key_value(line: str) -> tuple[str, str] | None:
    """Split one logical line into (key, value); None when it has no value."""
    if line.startswith('"'):
        pair = _split_quoted_key(line)
        if pair is None:
            return None
        key, rest = pair
    else:
        parts = line.split(None, 1)
        key, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    value = rest.strip()
    if not key or not value:
        return None
    return key, value


def parse_source(text: str, source: str = "stdin", *, fold_case: bool = True,
                 duplicates: str = DUP_WARN, utf8_check: bool = True) -> ParseResult:
    """Parse postmap ``key value`` text."""
    result = ParseResult()
    raw: list[Entry] = []
    for number, line in logical_lines(text, source, result.warnings, utf8_check=utf8_check):
        pair = split_key_value(line)
        if pair is None:
            result.warnings.append(f"{source}, line {number}: expected format: key whitespace value"
                                   " -- ignoring this line")
            continue
        key, value = pair
        raw.append(Entry(key.lower() if fold_case else key, value, number))
    result.entries = dedupe(raw, duplicates, result.warnings, source)
    return result
