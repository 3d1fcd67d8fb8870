"""Ordered-rule lookup tables: the engine ``regexp:``, ``pcre:`` and ``cidr:`` share.

Such a table is a list of rules, each tried in turn against the whole
lookup key; the first rule that matches gives the result (regexp_table(5),
pcre_table(5), cidr_table(5)).  Consumers are the same as for any table
(:mod:`postpy.tables.maps`): cleanup's header and body checks, smtpd access
maps, ``postmap -q``.  This module reads the rule file; the pattern syntax
of each type is a :class:`Syntax` supplied by
:mod:`postpy.tables.regexp_table` or :mod:`postpy.tables.cidr_table`.

The syntax every type shares:

- logical lines as in postmap sources (:func:`postpy.tables.source_parser.logical_lines`):
  blank lines and ``#`` comment lines are ignored, a line that starts with
  white space continues the previous one;
- ``PATTERN result``: the result when the key matches; ``!PATTERN result``:
  the result when it does not;
- ``if PATTERN`` (or ``if !PATTERN``) ... ``endif``: the rules in between
  are tried only when the key matches (does not match) PATTERN; the blocks
  nest.  Keywords are case-insensitive.

Unlike Postfix, which logs a warning and skips a malformed rule, any
malformed line makes the whole table fail with :class:`TableError`
("``regexp map /etc/postpy/header_checks, line 3: unknown regexp option
"Z"``"): a table that silently lacks a rule its author wrote would let
through what it was meant to stop.

A file is read when the table is opened and read again when it changes
(inode, mtime or size, as ``texthash:``); a file that has become
unreachable after a good read (a daemon in a chroot) keeps the rules it had.
``TYPE:{ {rule}, {rule} }`` gives the rules in the table name itself
(Postfix 3.7).  Rules are not listed (``postmap -s``): they have no keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from postpy.config.maincf import split_list
from postpy.tables import source_parser
from postpy.tables.lmdb_table import TableError
from postpy.util import maillog

Test = Callable[[object], object | None]      # a match (anything but None), or None
Expand = Callable[[object], str]              # the result, given the match


class SyntaxProblem(Exception):
    """One malformed rule; the text says what is wrong (the caller adds where)."""


class Syntax(Protocol):
    @property
    def kind(self) -> str:
        """The table type: "regexp", "pcre", "cidr"."""

    def prepare(self, key: str) -> object | None:
        """The key as the tests take it; None: no rule can match it."""

    def pattern(self, text: str) -> tuple[Test, str, int]:
        """Read the pattern at the start of ``text``: (its test, the text after
        it, how many ``$n`` groups a result may use).  Raises SyntaxProblem."""

    def result(self, text: str, groups: int, negated: bool) -> Expand:
        """Compile a result text.  Raises SyntaxProblem."""


@dataclass(frozen=True)
class Rule:
    line: int
    test: Test
    negated: bool
    expand: Expand | None        # None: an ``if``
    skip_to: int = -1            # an ``if`` that fails: index of the rule after its ``endif``


def _keyword(line: str, word: str) -> bool:
    n = len(word)
    return line[:n].lower() == word and (len(line) == n or not line[n].isalnum())


def parse_rules(lines: list[tuple[int, str]], syntax: Syntax, label: str) -> list[Rule]:
    """Compile logical lines into rules; TableError names ``label`` and the line."""
    rules: list[Rule] = []
    open_ifs: list[tuple[int, int]] = []          # (index of the if rule, its line)
    for number, line in lines:
        try:
            if _keyword(line, "endif"):
                if line[5:].strip():
                    raise SyntaxProblem(f"extra text after ENDIF: \"{line[5:].strip()}\"")
                if not open_ifs:
                    raise SyntaxProblem("ENDIF without matching IF")
                index, _ = open_ifs.pop()
                opened = rules[index]
                rules[index] = Rule(opened.line, opened.test, opened.negated, None, len(rules))
                continue
            is_if = _keyword(line, "if")
            text = line[2:].lstrip() if is_if else line
            negated = text.startswith("!")
            if negated:
                text = text[1:].lstrip()
            if not text:
                raise SyntaxProblem("missing pattern")
            test, rest, groups = syntax.pattern(text)
            rest = rest.strip()
            if is_if:
                if rest:
                    raise SyntaxProblem(f"extra text after IF statement: \"{rest}\"")
                open_ifs.append((len(rules), number))
                rules.append(Rule(number, test, negated, None))
                continue
            if not rest:
                raise SyntaxProblem("no lookup result")
            rules.append(Rule(number, test, negated, syntax.result(rest, groups, negated)))
        except SyntaxProblem as exc:
            raise TableError(f"{label}, line {number}: {exc}") from None
    if open_ifs:
        raise TableError(f"{label}, line {open_ifs[-1][1]}: IF has no matching ENDIF")
    return rules


def find(rules: list[Rule], syntax: Syntax, key: str) -> str | None:
    """The result of the first rule that matches ``key``, or None."""
    prepared = syntax.prepare(key)
    if prepared is None:
        return None
    index = 0
    while index < len(rules):
        rule = rules[index]
        found = rule.test(prepared)
        hit = (found is None) if rule.negated else (found is not None)
        if rule.expand is None:                   # an if: enter the block, or skip it
            index = index + 1 if hit else rule.skip_to
            continue
        if hit:
            return rule.expand(found)
        index += 1
    return None


def text_lines(text: str, label: str) -> list[tuple[int, str]]:
    """Logical lines of a rule file; an indented first line is an error."""
    warnings: list[str] = []
    lines: list[tuple[int, str]] = []
    for number, line in source_parser.logical_lines(text, label, warnings, utf8_check=False):
        if warnings:
            break
        lines.append((number, line))
    if warnings:
        raise TableError(warnings[0])
    return lines


def inline_lines(body: str, label: str) -> list[tuple[int, str]]:
    """``{ {rule}, {rule} }``: one rule per element, numbered from 1."""
    if not (body.startswith("{") and body.endswith("}")):
        raise TableError(f"{label}: need {{ {{rule}}, {{rule}} ... }}")
    lines: list[tuple[int, str]] = []
    for number, element in enumerate(split_list(body[1:-1]), 1):
        if element.startswith("{") and element.endswith("}"):
            element = element[1:-1].strip()
        if element:
            lines.append((number, element))
    return lines


class PatternTable:
    """A ``TYPE:/file`` or ``TYPE:{...}`` table of ordered rules (the Table protocol)."""

    def __init__(self, spec: str, name: str, syntax: Syntax) -> None:
        self.spec, self.syntax = spec, syntax
        self.path = "" if name.startswith("{") else name
        self.label = f"{syntax.kind} map {name}"
        self._rules: list[Rule] = []
        self._stamp: tuple[int, int, int] | None = None
        self._broken: TableError | None = None     # the current file's error, kept until it changes
        self._loaded = False
        if not name:
            raise TableError(f"{spec}: missing table file name")
        if not self.path:
            self._rules = parse_rules(inline_lines(name, self.label), syntax, self.label)
            self._loaded = True
        else:
            self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._loaded:
                if self._stamp is not None:
                    maillog.warning(f"{self.label}: cannot check for changes: {exc.strerror}; "
                                    "keeping the rules read before")
                    self._stamp = None
                return
            raise TableError(f"open {self.path}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            if self._broken is not None:
                raise self._broken
            return
        try:
            text = source_parser.read_source_file(self.path)
        except OSError as exc:
            raise TableError(f"open {self.path}: {exc.strerror}") from None
        self._stamp = stamp
        try:
            self._rules = parse_rules(text_lines(text, self.label), self.syntax, self.label)
        except TableError as exc:
            self._broken = exc
            raise
        self._broken = None
        self._loaded = True

    def lookup(self, key: str) -> str | None:
        if self.path:
            self._load()
        return find(self._rules, self.syntax, key)

    def items(self) -> list[tuple[str, str]]:
        raise TableError(f"{self.spec}: table does not support listing its entries")
