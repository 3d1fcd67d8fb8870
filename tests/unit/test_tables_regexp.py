"""regexp: and pcre: tables (regexp_table.py on the pattern_table.py engine)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.tables import maps
from postpy.tables.lmdb_table import TableError
from postpy.util import maillog


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path) -> Iterator[None]:
    maillog.setup("test", maillog_file=str(tmp_path / "maillog"))
    maps.clear_cache()
    yield
    maps.clear_cache()


def table(tmp_path: Path, kind: str, text: str, name: str = "t") -> maps.Table:
    path = tmp_path / name
    path.write_text(text)
    return maps.open_table(f"{kind}:{path}", warn=False)


# (table text, key, expected result) -- the same for regexp: and pcre: unless marked
BOTH = [
    ("/^(a)(b)$/ r $1 ${2} $(2) $$\n", "ab", "r a b b $"),
    ("/^(a)(b)$/ r $1.$2\n", "AB", "r A.B"),                         # case-insensitive by default
    ("/^a$/i r\n", "A", None),                                        # i toggles it off
    ("/^a$/i r\n", "a", "r"),
    ("/^(a)(b)?$/ [$2]\n", "a", "[]"),                                # a group that took no part
    ("/x/ first\n/x/ second\n", "x", "first"),                        # first match wins
    ("!/foo/ not foo\n", "bar", "not foo"),
    ("!/foo/ not foo\n", "foo", None),
    ("/a\\/b/ slash\n", "a/b", "slash"),                              # escaped delimiter
    ("|a/b| pipe\n", "xa/b", "pipe"),                                 # another delimiter
    ("/a/m   spaced   result\n", "a", "spaced   result"),
    ("/a/ first\n  continued\n", "a", "first  continued"),           # continuation line
    ("# comment\n\n   \n/a/ r\n", "a", "r"),
    ("if /^q/\n/qq/ inner\nendif\n/q/ outer\n", "qq", "inner"),
    ("if /^q/\n/qq/ inner\nendif\n/q/ outer\n", "xq", "outer"),
    ("if !/^q/\n/x/ not-q\nendif\n", "x", "not-q"),
    ("if !/^q/\n/x/ not-q\nendif\n", "qx", None),
    ("IF /a/\nIF /b/\n/c/ abc\nENDIF\n/a/ a\nEndIf\n", "ac", "a"),
    ("IF /a/\nIF /b/\n/c/ abc\nENDIF\n/a/ a\nEndIf\n", "abc", "abc"),
    ("if ! /a/\n/b/ b\nendif\n", "b", "b"),                           # "!" then space
    ("/[[:digit:]]{3}/ digits\n", "ab123", "digits"),
    ("/^[[:alpha:]_]+$/ word\n", "ab_c", "word"),
    ("/^[^[:space:]]+$/ nospace\n", "a b", None),
    ("/^a{2,}$/ many\n", "aaa", "many"),
]
REGEXP_ONLY = [
    ("/^Subject:.*money/ REJECT\n", "Subject: free\n\tmoney", "REJECT"),  # folded header
    ("/a.b/ dot\n", "a\nb", "dot"),                                   # . matches a line break
    ("/a.b/m dot\n", "a\nb", None),                                   # not with m
    ("/^b/m line\n", "a\nb", "line"),
    ("/a$/ end\n", "a\n", None),                                      # $ is the very end
    ("/[\\.]/ backslash\n", "\\", "backslash"),                       # \ is ordinary in brackets
    ("/\\<word\\>/ gnu\n", "a word here", "gnu"),
    ("/\\(a\\)\\{2\\}/x bre $1\n", "aa", "bre a"),                    # x off: basic syntax
    ("/a+/x bre\n", "a+", "bre"),
    ("/a+/x bre\n", "aa", None),
    ("/^*a/x star\n", "*a", "star"),
    ("/a\\.b/ dot\n", "axb", None),
]
PCRE_ONLY = [
    ("/^Subject:.*money/ REJECT\n", "Subject: free\n\tmoney", None),     # . stops at \n
    ("/^Subject:.*money/s REJECT\n", "Subject: free\n\tmoney", "REJECT"),
    ("/a.b/ dot\n", "a\nb", None),                                    # . stops at a line break
    ("/a.b/s dot\n", "a\nb", "dot"),
    ("/\\d+/ digits\n", "x42", "digits"),
    ("/^(?<first>a)b/ named $1\n", "ab", "named a"),
    ("/^a\\Q.*\\E$/ quoted\n", "a.*", "quoted"),
    ("/^a\\Q.*\\E$/ quoted\n", "ab", None),
    ("/b/A anchored\n", "ab", None),
    ("/a/A anchored\n", "ab", "anchored"),
    ("/a$/ end\n", "a\n", "end"),
    ("/a$/E end\n", "a\n", None),
    ("/^(a+)/U lazy $1\n", "aaa", "lazy a"),
    ("/^(a+?)/U greedy $1\n", "aaa", "greedy aaa"),
    ("/^a b # comment\n  c$/x extended\n", "abz", "extended"),          # the comment eats "c$"
    ("/^ a b c $/x extended\n", "abc", "extended"),
    ("/^a\\h\\x{62}$/X esc\n", "a b", "esc"),
    ("#a/b/ comment\n/\\w+\\s\\w+/ words\n", "a b", "words"),
]


@pytest.mark.parametrize(("kind", "text", "key", "expected"),
                         [("regexp", *case) for case in BOTH + REGEXP_ONLY]
                         + [("pcre", *case) for case in BOTH + PCRE_ONLY])
def test_lookup(tmp_path: Path, kind: str, text: str, key: str, expected: str | None) -> None:
    assert table(tmp_path, kind, text).lookup(key) == expected


# (table text, the error after "TYPE map FILE, line ") -- for both types unless marked
MALFORMED = [
    ("/a/\n", "1: no lookup result"),
    ("/a/ ok\n/b/   \n", "2: no lookup result"),
    ("/a r\n", '1: no closing regexp delimiter "/"'),
    ("abc r\n", '1: unrecognized request: "abc r"'),
    ("\\a\\ r\n", "1: unrecognized request"),
    ("/a/Z r\n", '1: unknown regexp option "Z"'),
    ("/(a/ r\n", "1: bad regular expression"),
    ("/[a/ r\n", "1: unmatched [ or [^"),
    ("/[[:nope:]]/ r\n", '1: invalid character class name "nope"'),
    ("/(a)(b)/ $3\n", '1: out-of-range replacement index "3"'),
    ("/(a)(b)/ $0\n", '1: out-of-range replacement index "0"'),
    ("/(a)/ $1x\n", '1: non-numeric replacement index "1x"'),
    ("/(a)/ $a\n", '1: non-numeric replacement index "a"'),
    ("/(a)/ r $\n", '1: empty macro name: "r $"'),
    ("/(a)/ r ${1\n", '1: truncated macro reference: "r ${1"'),
    ("/(a)/ $99999999\n", '1: out-of-range replacement index "99999999"'),
    ("!/(a)/ $1\n", "1: $number found in negative match replacement text"),
    ("/a/ ok\nendif\n", "2: ENDIF without matching IF"),
    ("# c\nif /a/\n/a/ x\n", "2: IF has no matching ENDIF"),
    ("if /a/ junk\nendif\n", '1: extra text after IF statement: "junk"'),
    ("if /a/\nendif junk\n", '2: extra text after ENDIF: "junk"'),
    ("if\nendif\n", "1: missing pattern"),
    ("!\n", "1: missing pattern"),
    ("  /a/ r\n", "1: logical line must not start with whitespace"),
    ("/a/ ok\n" * 3 + "/b/Q r\n", '4: unknown regexp option "Q"'),
]
REGEXP_MALFORMED = [
    ("/\\d/ r\n", '1: unsupported escape "\\d"'),
    ("/a**/ r\n", "1: a repetition operator after a repetition operator"),
    ("/*a/ r\n", "1: invalid preceding regular expression"),
    ("/a/s r\n", '1: unknown regexp option "s"'),
    ("/a\\{x\\}/x r\n", "1: invalid content of \\{\\}"),
    ("/[[.ab.]]/ r\n", '1: unsupported collating element "[.ab.]"'),
]
PCRE_MALFORMED = [
    ("/\\R/ r\n", "1: bad regular expression"),
    ("/(*UTF)a/ r\n", "1: bad regular expression"),
    ("/a\\x{zz}/ r\n", "1: bad \\x{...} escape"),
    ("/(?<n/ r\n", "1: unterminated group name"),
]


@pytest.mark.parametrize(("kind", "text", "error"),
                         [("regexp", *case) for case in MALFORMED + REGEXP_MALFORMED]
                         + [("pcre", *case) for case in MALFORMED + PCRE_MALFORMED])
def test_malformed_line_names_file_and_line(tmp_path: Path, kind: str, text: str, error: str) -> None:
    with pytest.raises(TableError) as info:
        table(tmp_path, kind, text)
    assert str(info.value).startswith(f"{kind} map {tmp_path / 't'}, line {error}"), str(info.value)


def test_missing_file_and_listing(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=r"open .*/none: No such file or directory"):
        maps.open_table(f"regexp:{tmp_path}/none", warn=False)
    with pytest.raises(TableError, match="missing table file name"):
        maps.open_table("pcre:", warn=False)
    with pytest.raises(TableError, match="does not support listing"):
        table(tmp_path, "regexp", "/a/ b\n").items()


def test_keys_are_not_folded(tmp_path: Path) -> None:
    t = table(tmp_path, "pcre", "/^(A.*)$/i $1\n")
    assert t.lookup("ABC") == "ABC" and t.lookup("abc") is None


def test_reread_when_the_file_changes_and_errors_persist(tmp_path: Path) -> None:
    path = tmp_path / "t"
    t = table(tmp_path, "regexp", "/a/ one\n")
    assert t.lookup("a") == "one"
    path.write_text("/a/ two, longer\n")
    assert t.lookup("a") == "two, longer"
    path.write_text("/a/ broken $9\n")
    for _ in range(2):                               # the error stays until the file changes
        with pytest.raises(TableError, match="out-of-range"):
            t.lookup("a")
    path.write_text("/a/ fixed again\n")
    assert t.lookup("a") == "fixed again"


def test_vanished_file_keeps_the_rules(tmp_path: Path) -> None:
    """A daemon in a chroot cannot see the file any more: it keeps what it read."""
    t = table(tmp_path, "regexp", "/a/ one\n")
    os.unlink(tmp_path / "t")
    assert t.lookup("a") == "one"
    assert "cannot check for changes" in (tmp_path / "maillog").read_text()


def test_inline_rules() -> None:
    t = maps.open_table("regexp:{ {/^a(.)/ got $1}, {!/x/ no x} }", warn=False)
    assert t.lookup("ab") == "got b" and t.lookup("y") == "no x" and t.lookup("x") is None
    with pytest.raises(TableError, match=r"regexp map \{ \{/a/\} \}, line 1: no lookup result"):
        maps.open_table("regexp:{ {/a/} }", warn=False)


def test_deep_nesting_and_many_rules(tmp_path: Path) -> None:
    depth = 5000                                      # no recursion anywhere
    t = table(tmp_path, "regexp", "if /a/\n" * depth + "/a/ deep\n" + "endif\n" * depth)
    assert t.lookup("a") == "deep" and t.lookup("b") is None


def test_non_utf8_bytes_in_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"/caf\xe9/ latin1\n")
    t = maps.open_table(f"pcre:{path}", warn=False)
    assert t.lookup(b"un caf\xe9".decode("utf-8", "surrogateescape")) == "latin1"
