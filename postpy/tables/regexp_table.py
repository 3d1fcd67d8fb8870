"""``regexp:`` and ``pcre:`` tables: ordered regular expressions, first match wins.

Used wherever a table is (:mod:`postpy.tables.maps`), above all by cleanup
for header_checks and body_checks (:mod:`postpy.cleanup.checks`).  The file
syntax shared with ``cidr:`` (logical lines, ``!`` negation, ``if``/``endif``,
errors as TableError with file and line) is in
:mod:`postpy.tables.pattern_table`; this module reads the patterns and the
results.  Both types run on Python's :mod:`re`.

A rule is ``/pattern/flags result``.  The delimiter is the first character:
any character but a letter, a digit, white space or a backslash (``/`` by
custom); inside the pattern a backslash keeps the next character from
ending it (``\\/``).  Keys are never case-folded: matching is
case-insensitive by default and the ``i`` flag toggles that.

``regexp:`` (POSIX, regexp_table(5)), translated to Python syntax:

- flags ``i`` (toggle case-insensitivity, on by default), ``m`` (toggle
  REG_NEWLINE: ``^``/``$`` also match at line breaks, ``.`` no longer
  matches one; off by default, so ``.`` matches a line break of a folded
  header), ``x`` (toggle extended syntax, on by default: off means POSIX
  basic syntax, ``\\(...\\)`` groups);
- bracket expressions are POSIX: ``[[:alpha:]]`` classes, a backslash in
  brackets is an ordinary character; ``$`` matches only at the very end;
- GNU escapes ``\\w \\W \\s \\S \\b \\B \\< \\> \\` \\'`` and back-references
  ``\\1``-``\\9`` work; a backslash before another punctuation character makes
  it ordinary; any other backslash-letter (``\\d``, ``\\n``, which glibc accepts
  but never matches) is refused as a syntax error;
- ``*?`` and other repeated repetition operators are refused (POSIX reads
  them differently from Python); the leftmost-longest rule of POSIX is not
  followed (Python takes the first alternative that matches).

``pcre:`` (pcre_table(5)): Python's syntax is close to PCRE's; flags ``i``
(on by default), ``m``, ``s``, ``x``, ``A`` (anchored at the start), ``E``
(``$`` only at the very end), ``U`` (swap greedy and lazy repetition) and
``X`` (no effect).  Translated: POSIX classes in brackets, ``(?<name>``,
``(?'name'``, ``\\k<name>``, ``\\Q...\\E``, ``\\z``, ``\\Z``, ``\\h``, ``\\H``,
``\\x{hh}``.  Anything else Python does not know (``\\R``, recursion,
``(*VERBS)``, negated POSIX classes) is refused as a syntax error.

Results: ``$1``..``$9`` (also ``${n}``, ``$(n)``) insert what group n
matched (empty if it took no part), ``$$`` is a ``$``; a group number the
pattern does not have, any other ``$name``, and ``$n`` in a negated rule
are syntax errors, as in Postfix.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from postpy.tables.pattern_table import Expand, SyntaxProblem, Test

_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z", "upper": "A-Z",
    "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "xdigit": "0-9A-Fa-f",
    "cntrl": "\\x00-\\x1f\\x7f", "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e",
    "punct": "!-/:-@\\[-`{-~", "word": "\\w",
}
_SET_SPECIAL = set("\\]-^[&~|")
_GNU_ESCAPES = {"<": r"\b(?=\w)", ">": r"\b(?<=\w)", "`": r"\A", "'": r"\Z"}
_INTERVAL_BODY = re.compile(r"[0-9]+(?:,[0-9]*)?|,[0-9]+")
_INTERVAL = re.compile(r"\{(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)\}")
_MACRO_NAME = re.compile(r"[A-Za-z0-9_]*")
_PCRE_FLAGS = "imsxAEUX"
_REGEXP_FLAGS = "imx"


# -- the /pattern/flags part ----------------------------------------------------

def split_pattern(text: str, kind: str) -> tuple[str, str, str]:
    """``/pattern/flags rest`` -> (pattern, flags, rest)."""
    delimiter = text[0]
    if delimiter.isalnum() or delimiter.isspace() or delimiter == "\\":
        raise SyntaxProblem(f"unrecognized request: \"{text[:60]}\" (a {kind} rule starts "
                            "with a delimiter such as /)")
    i = 1
    while i < len(text) and text[i] != delimiter:
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise SyntaxProblem(f"no closing regexp delimiter \"{delimiter}\"")
    end = i + 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[1:i], text[i + 1:end], text[end:]


def _set_char(ch: str) -> str:
    return "\\" + ch if ch in _SET_SPECIAL else ch


def _bracket(pattern: str, start: int, *, posix: bool) -> tuple[str, int]:
    """The bracket expression at ``pattern[start] == "["`` in Python syntax,
    and the index after it.  ``posix``: a backslash is an ordinary character."""
    i, n = start + 1, len(pattern)
    out = ["["]
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True

    def member(i: int) -> tuple[str, int]:
        """One character (or escape) at i, as Python set syntax."""
        if not posix and pattern[i] == "\\":
            if i + 1 >= n:
                raise SyntaxProblem("unmatched [")
            return _pcre_set_escape(pattern[i + 1]), i + 2
        return _set_char(pattern[i]), i + 1

    while True:
        if i >= n:
            raise SyntaxProblem("unmatched [ or [^")
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        first = False
        if ch == "[" and i + 1 < n and pattern[i + 1] in ":.=":
            kind = pattern[i + 1]
            end = pattern.find(kind + "]", i + 2)
            if end < 0:
                raise SyntaxProblem(f"unmatched [{kind}")
            name = pattern[i + 2:end]
            i = end + 2
            if kind == ":":
                if name not in _POSIX_CLASSES:
                    raise SyntaxProblem(f"invalid character class name \"{name}\"")
                out.append(_POSIX_CLASSES[name])
            elif len(name) == 1:
                out.append(_set_char(name))
            else:
                raise SyntaxProblem(f"unsupported collating element \"[{kind}{name}{kind}]\"")
            continue
        low, i = member(i)
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            high, i = member(i + 1)
            out.append(f"{low}-{high}")
        else:
            out.append(low)


def _pcre_set_escape(ch: str) -> str:
    if ch == "h":
        return " \\t"
    return "\\" + ch


# -- regexp: POSIX syntax --------------------------------------------------------

def posix_to_python(pattern: str, *, extended: bool, multiline: bool) -> str:
    """A POSIX (GNU) regular expression in Python syntax (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    start = True             # at the start of an expression: a BRE "*" is literal, "^" an anchor
    repeated = False         # the last token was a repetition operator
    while i < n:
        ch = pattern[i]
        kind = "atom"        # or "open" (a group or alternative begins), "quant", "caret"
        if ch == "[":
            text, i = _bracket(pattern, i, posix=True)
        elif ch == "\\":
            if i + 1 >= n:
                raise SyntaxProblem("trailing backslash")
            d = pattern[i + 1]
            i += 2
            if not extended and d in "(|":
                text, kind = d, "open"
            elif not extended and d == ")":
                text = d
            elif not extended and d == "{":
                end = pattern.find("\\}", i)
                if end < 0 or not _INTERVAL_BODY.fullmatch(pattern[i:end]):
                    raise SyntaxProblem("invalid content of \\{\\}")
                text, kind, i = "{" + pattern[i:end] + "}", "quant", end + 2
            elif not extended and d in "+?":
                text, kind = d, "quant"
            elif d in _GNU_ESCAPES:
                text = _GNU_ESCAPES[d]
            elif d in "wWsSbB123456789":
                text = "\\" + d
            elif d.isalnum():
                raise SyntaxProblem(f"unsupported escape \"\\{d}\" in a POSIX regular expression"
                                    " (use a bracket expression such as [[:digit:]], or pcre:)")
            else:
                text = re.escape(d)
        else:
            i += 1
            if not extended and ch in "(){}|+?":
                text = re.escape(ch)
            elif ch == "$":
                anchor = extended or i == n or pattern.startswith(("\\)", "\\|"), i)
                text = ("$" if multiline else r"\Z") if anchor else r"\$"
            elif ch == "^":
                text, kind = ("^", "caret") if extended or start else (r"\^", "atom")
            elif ch == "*" and start and not extended:
                text = r"\*"
            elif ch in "*+?":
                text, kind = ch, "quant"
            elif ch == "{":
                m = _INTERVAL.match(pattern, i - 1)
                if m is None:
                    text = r"\{"
                else:
                    text, kind, i = m.group(), "quant", m.end()
            elif ch in "(|":
                text, kind = ch, "open"
            else:
                text = ch
        if kind == "quant" and (repeated or start):
            raise SyntaxProblem("invalid preceding regular expression" if start else
                                "a repetition operator after a repetition operator "
                                "is not supported here")
        out.append(text)
        repeated = kind == "quant"
        start = kind in ("open", "caret")
    return "".join(out)


# -- pcre: Perl syntax -------------------------------------------------------------

def pcre_to_python(pattern: str, *, extended: bool, dollar_endonly: bool,
                   multiline: bool, ungreedy: bool) -> str:
    """A PCRE pattern in Python syntax (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "[":
            piece, i = _bracket(pattern, i, posix=False)
            out.append(piece)
            continue
        if ch == "\\":
            if i + 1 >= n:
                raise SyntaxProblem("\\ at end of pattern")
            d = pattern[i + 1]
            i += 2
            if d == "Q":
                end = pattern.find("\\E", i)
                end = n if end < 0 else end
                out.append(re.escape(pattern[i:end]))
                i = end + 2
            elif d == "E":
                pass                                    # \E without \Q: nothing
            elif d == "z":
                out.append(r"\Z")
            elif d == "Z":
                out.append(r"(?=\n?\Z)")
            elif d == "h":
                out.append(r"[ \t]")
            elif d == "H":
                out.append(r"[^ \t]")
            elif d == "k" and i < n and pattern[i] in "<{'":
                close = {"<": ">", "{": "}", "'": "'"}[pattern[i]]
                end = pattern.find(close, i + 1)
                if end < 0:
                    raise SyntaxProblem("\\k is not followed by a name")
                out.append(f"(?P={pattern[i + 1:end]})")
                i = end + 1
            elif d == "x" and i < n and pattern[i] == "{":
                end = pattern.find("}", i)
                digits = pattern[i + 1:end] if end > 0 else ""
                if not digits or len(digits) > 6 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise SyntaxProblem("bad \\x{...} escape")
                out.append(re.escape(chr(min(int(digits, 16), 0x10FFFF))))
                i = end + 1
            else:
                out.append("\\" + d)
            continue
        if ch == "#" and extended:
            out.append(pattern[i:])                     # a comment to the end
            break
        if ch == "(" and pattern.startswith(("(?<", "(?'"), i) and \
                not pattern.startswith(("(?<=", "(?<!"), i):
            close = ">" if pattern[i + 2] == "<" else "'"
            end = pattern.find(close, i + 3)
            if end < 0:
                raise SyntaxProblem("unterminated group name")
            out.append(f"(?P<{pattern[i + 3:end]}>")
            i = end + 1
            continue
        if ch == "$" and dollar_endonly and not multiline:
            out.append(r"\Z")
            i += 1
            continue
        if ungreedy and not (ch == "?" and i > 0 and pattern[i - 1] == "("):
            m = _INTERVAL.match(pattern, i) if ch == "{" else None
            if ch in "*+?" or m is not None:
                out.append(m.group() if m else ch)
                i = m.end() if m else i + 1
                if i < n and pattern[i] == "?":
                    i += 1                              # lazy becomes greedy
                elif i < n and pattern[i] == "+":
                    out.append("+")                     # possessive stays
                    i += 1
                else:
                    out.append("?")
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# -- results -----------------------------------------------------------------------

def compile_result(text: str, groups: int, negated: bool) -> Expand:
    """``$n`` substitution in a result (see the module docstring)."""
    parts: list[str | int] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            literal.append(ch)
            i += 1
            continue
        if i + 1 < n and text[i + 1] == "$":
            literal.append("$")
            i += 2
            continue
        if i + 1 < n and text[i + 1] in "{(":
            close = "}" if text[i + 1] == "{" else ")"
            end = text.find(close, i + 2)
            if end < 0:
                raise SyntaxProblem(f"truncated macro reference: \"{text}\"")
            name, i = text[i + 2:end], end + 1
        else:
            name = _MACRO_NAME.match(text, i + 1).group()     # type: ignore[union-attr]
            i += 1 + len(name)
        if not name:
            raise SyntaxProblem(f"empty macro name: \"{text}\"")
        if not (name.isascii() and name.isdigit()):
            raise SyntaxProblem(f"non-numeric replacement index \"{name}\"")
        if negated:
            raise SyntaxProblem("$number found in negative match replacement text")
        number = int(name) if len(name) < 6 else 0
        if not 1 <= number <= groups:
            raise SyntaxProblem(f"out-of-range replacement index \"{name}\"")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(number)
    if literal:
        parts.append("".join(literal))
    if all(isinstance(p, str) for p in parts):
        constant = "".join(p for p in parts if isinstance(p, str))
        return lambda _match: constant

    def expand(match: object) -> str:
        assert isinstance(match, re.Match)
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in parts)
    return expand


# -- the two syntaxes ----------------------------------------------------------------

def _compile(source: str, flags: int) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # FutureWarning "possible nested set", ...
        try:
            return re.compile(source, flags)
        except (re.error, ValueError, OverflowError, RecursionError, Warning) as exc:
            raise SyntaxProblem(f"bad regular expression: {exc}") from None


def _search(compiled: re.Pattern[str], anchored: bool) -> Test:
    method = compiled.match if anchored else compiled.search

    def test(key: object) -> re.Match[str] | None:
        assert isinstance(key, str)
        return method(key)
    return test


@dataclass(frozen=True)
class RegexpSyntax:
    """``regexp:`` -- POSIX regular expressions."""

    kind: str = "regexp"

    def prepare(self, key: str) -> object | None:
        return key

    def pattern(self, text: str) -> tuple[Test, str, int]:
        source, flags, rest = split_pattern(text, self.kind)
        icase, multiline, extended = True, False, True
        for flag in flags:
            if flag not in _REGEXP_FLAGS:
                raise SyntaxProblem(f"unknown regexp option \"{flag}\"")
            icase ^= flag == "i"
            multiline ^= flag == "m"
            extended ^= flag == "x"
        python = posix_to_python(source, extended=extended, multiline=multiline)
        compiled = _compile(python, (re.IGNORECASE if icase else 0)
                            | (re.MULTILINE if multiline else re.DOTALL))
        return _search(compiled, False), rest, compiled.groups

    def result(self, text: str, groups: int, negated: bool) -> Expand:
        return compile_result(text, groups, negated)


@dataclass(frozen=True)
class PcreSyntax:
    """``pcre:`` -- Perl-compatible regular expressions, on Python's re."""

    kind: str = "pcre"

    def prepare(self, key: str) -> object | None:
        return key

    def pattern(self, text: str) -> tuple[Test, str, int]:
        source, flags, rest = split_pattern(text, self.kind)
        on = {"i": True}
        for flag in flags:
            if flag not in _PCRE_FLAGS:
                raise SyntaxProblem(f"unknown regexp option \"{flag}\"")
            on[flag] = not on.get(flag, False)
        python = pcre_to_python(source, extended=on.get("x", False),
                                dollar_endonly=on.get("E", False),
                                multiline=on.get("m", False), ungreedy=on.get("U", False))
        compiled = _compile(python, (re.IGNORECASE if on["i"] else 0)
                            | (re.MULTILINE if on.get("m") else 0)
                            | (re.DOTALL if on.get("s") else 0)
                            | (re.VERBOSE if on.get("x") else 0))
        return _search(compiled, on.get("A", False)), rest, compiled.groups

    def result(self, text: str, groups: int, negated: bool) -> Expand:
        return compile_result(text, groups, negated)


REGEXP = RegexpSyntax()
PCRE = PcreSyntax()
