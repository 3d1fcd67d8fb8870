"""aliases(5) parser: entries, warnings, value splitting, target kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.tables.aliases_parser import (
    ADDRESS,
    COMMAND,
    FILE,
    INCLUDE,
    MAILBOX,
    parse_aliases,
    parse_include,
    parse_target,
    parse_value,
    split_value,
)
from postpy.tables.source_parser import DUP_IGNORE, DUP_REPLACE

DATA = Path(__file__).resolve().parent.parent / "data" / "aliases"


def entries(text: str, **kw: object) -> list[tuple[str, list[str], int]]:
    result = parse_aliases(text, "src", **kw)  # type: ignore[arg-type]
    return [(e.name, e.targets, e.line) for e in result.entries]


def warnings(text: str, **kw: object) -> list[str]:
    return parse_aliases(text, "src", **kw).warnings  # type: ignore[arg-type]


# (source text, expected entries) -- no warnings expected
GOOD = [
    ("root: admin\n", [("root", ["admin"], 1)]),
    ("root:admin", [("root", ["admin"], 1)]),
    ("root : admin , bob\n", [("root", ["admin", "bob"], 1)]),
    ("ROOT: Admin\n", [("root", ["Admin"], 1)]),
    ("# comment\n\n   \nroot: a\n", [("root", ["a"], 4)]),
    ("root: a # not a comment\n", [("root", ["a # not a comment"], 1)]),
    ("a: b,\n  c,\n\td\n", [("a", ["b", "c", "d"], 1)]),
    ("a: b,\n\n  # note\n  c\nx: y\n", [("a", ["b", "c"], 1), ("x", ["y"], 5)]),
    ("a: b\n  c\n", [("a", ["b c"], 1)]),
    ("name\n  continued: x\n", [("name continued", ["x"], 1)]),
    ('"foo bar": baz\n', [("foo bar", ["baz"], 1)]),
    ('"a:b#c": x\n', [("a:b#c", ["x"], 1)]),
    ('"quoted@name": x\n', [("quoted@name", ["x"], 1)]),
    ('p: "|/usr/bin/procmail -a x"\n', [("p", ['"|/usr/bin/procmail -a x"'], 1)]),
    ('p: "|cmd a,b", c\n', [("p", ['"|cmd a,b"', "c"], 1)]),
    ("p: :include:/etc/list\n", [("p", [":include:/etc/list"], 1)]),
    ("p: /var/mail/x, /var/mail/dir/\n", [("p", ["/var/mail/x", "/var/mail/dir/"], 1)]),
    ("p: |/bin/cat\n", [("p", ["|/bin/cat"], 1)]),
    ("p: \\root, root\n", [("p", ["\\root", "root"], 1)]),
    ("p: a,,b,\n", [("p", ["a", "b"], 1)]),
    ("p: Bob Smith <bob@example.com>\n", [("p", ["<bob@example.com>"], 1)]),
    ("p: bob@example.com (Bob)\n", [("p", ["bob@example.com"], 1)]),
    ("p: user@[IPv6:::1]\n", [("p", ["user@[IPv6:::1]"], 1)]),
    ("a: b\r\nc: d\r\n", [("a", ["b"], 1), ("c", ["d"], 2)]),
    ("a: b\n\n\n", [("a", ["b"], 1)]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_input(text: str, expected: list[tuple[str, list[str], int]]) -> None:
    result = parse_aliases(text, "src")
    assert result.warnings == []
    assert [(e.name, e.targets, e.line) for e in result.entries] == expected


# (source text, warning expected, names that survive)
BAD = [
    ("no colon here\n", "src, line 1: need name:value pair", []),
    (": value\n", "src, line 1: need name:value pair", []),
    ("name:\n", "src, line 1: need name:value pair", []),
    ("name:   \n", "src, line 1: need name:value pair", []),
    ("name: ,,\n", "src, line 1: need name:value pair", []),
    ('"": x\n', "src, line 1: need name:value pair", []),
    ("a, b: c\n", "src, line 1: need name:value pair", []),
    ("a@example.com: c\n", "src, line 1: name must be local and have no domain", []),
    ("a%host: c\n", "src, line 1: name must be local and have no domain", []),
    ("  a: b\nc: d\n", "src, line 1: logical line must not start with whitespace", ["c"]),
    ("ok: 1\nbad\nnext: 3\n", "src, line 2: need name:value pair", ["ok", "next"]),
    ("a: 1\nA: 2\n", 'src, line 2: duplicate entry: "a"', ["a"]),
    ("ok: 1\nx\udcff: y\n", "src, line 2: non-UTF-8 input -- ignoring this line", ["ok"]),
]


@pytest.mark.parametrize(("text", "warning", "names"), BAD)
def test_malformed_input(text: str, warning: str, names: list[str]) -> None:
    result = parse_aliases(text, "src")
    assert any(w.startswith(warning) for w in result.warnings), result.warnings
    assert len(result.warnings) == 1
    assert [e.name for e in result.entries] == names


def test_duplicate_first_wins_by_default() -> None:
    assert entries("a: 1\na: 2\n") == [("a", ["1"], 1)]


def test_duplicate_replace_and_ignore() -> None:
    assert entries("a: 1\na: 2\n", duplicates=DUP_REPLACE) == [("a", ["2"], 2)]
    assert warnings("a: 1\na: 2\n", duplicates=DUP_REPLACE) == []
    assert entries("a: 1\na: 2\n", duplicates=DUP_IGNORE) == [("a", ["1"], 1)]
    assert warnings("a: 1\na: 2\n", duplicates=DUP_IGNORE) == []


def test_no_case_folding() -> None:
    assert entries("Root: a\nroot: b\n", fold_case=False) == [("Root", ["a"], 1), ("root", ["b"], 2)]


def test_non_utf8_kept_without_check() -> None:
    assert entries("x: caf\udce9\n", utf8_check=False) == [("x", ["caf\udce9"], 1)]


def test_value_property_round_trips() -> None:
    text = 'l: "|/usr/bin/procmail -a x", /f, :include:/i, \\u, a@b, "x y"@example.com\n'
    entry = parse_aliases(text).entries[0]
    assert entry.value == ", ".join(entry.targets)
    assert split_value(entry.value) == entry.targets


# (value text, [(kind, value)])
TARGETS = [
    ("alice", [(ADDRESS, "alice")]),
    ("alice@example.com", [(ADDRESS, "alice@example.com")]),
    ('"john doe"@example.com', [(ADDRESS, "john doe@example.com")]),
    ('"|x"@example.com', [(ADDRESS, "|x@example.com")]),
    ("Bob <bob@example.com>", [(ADDRESS, "bob@example.com")]),
    ("|/bin/cat", [(COMMAND, "/bin/cat")]),
    ("| /bin/cat -n", [(COMMAND, "/bin/cat -n")]),
    ('"|/usr/bin/procmail -a x"', [(COMMAND, "/usr/bin/procmail -a x")]),
    ('"|exit 67"', [(COMMAND, "exit 67")]),
    ("/var/mail/x", [(FILE, "/var/mail/x")]),
    ("/var/mail/maildir/", [(FILE, "/var/mail/maildir/")]),
    ('"/tmp/with space"', [(FILE, "/tmp/with space")]),
    (":include:/etc/list", [(INCLUDE, "/etc/list")]),
    (":INCLUDE: /etc/list", [(INCLUDE, "/etc/list")]),
    ('":include:/etc/a b"', [(INCLUDE, "/etc/a b")]),
    ("\\root", [(MAILBOX, "root")]),
    ("a, b ,c", [(ADDRESS, "a"), (ADDRESS, "b"), (ADDRESS, "c")]),
    ('"a,b", c', [(ADDRESS, "a,b"), (ADDRESS, "c")]),
    ('"a \\" b"', [(ADDRESS, 'a " b')]),
    ('"unterminated', [(ADDRESS, "unterminated")]),
    ("x (comment, with comma) , y", [(ADDRESS, "x"), (ADDRESS, "y")]),
    ("<@hop1,@hop2:user@example.com>", [(ADDRESS, "@hop1,@hop2:user@example.com")]),
    ("", []),
    (" , ,", []),
]


@pytest.mark.parametrize(("value", "expected"), TARGETS)
def test_parse_value(value: str, expected: list[tuple[str, str]]) -> None:
    assert [(t.kind, t.value) for t in parse_value(value)] == expected


@pytest.mark.parametrize(("value", "expected"), TARGETS)
def test_split_value_is_stable(value: str, expected: list[tuple[str, str]]) -> None:
    raw = split_value(value)
    assert split_value(", ".join(raw)) == raw
    assert [(t.kind, t.value) for t in parse_value(", ".join(raw))] == expected


def test_parse_target() -> None:
    target = parse_target('"|/bin/x y"')
    assert target is not None and (target.kind, target.value, target.raw) == (
        COMMAND, "/bin/x y", '"|/bin/x y"')
    assert parse_target("  ") is None


def test_parse_include() -> None:
    text = "# members\nalice, bob\n\n  carol\n/var/log/list\n"
    assert [(t.kind, t.value) for t in parse_include(text)] == [
        (ADDRESS, "alice"), (ADDRESS, "bob"), (ADDRESS, "carol"), (FILE, "/var/log/list")]


def test_sample_file_basic() -> None:
    text = (DATA / "basic.aliases").read_text()
    result = parse_aliases(text, "basic.aliases")
    assert result.warnings == []
    got = {e.name: e for e in result.entries}
    assert got["mailer-daemon"].targets == ["postmaster"]
    assert got["staff"].targets == ["alice", "bob@example.com", "carol"]
    assert got["staff"].line == 10
    assert got["root"].targets == ["\\root", "admin@example.org"]
    assert got["list owner"].targets == ["owner@example.org"]
    kinds = [(t.kind, t.value) for t in parse_value(got["mixed"].value)]
    assert kinds == [(ADDRESS, "alice"), (COMMAND, "/bin/cat > /dev/null"), (FILE, "/tmp/log"),
                     (INCLUDE, "/etc/x"), (ADDRESS, "bob@example.com")]


def test_sample_file_malformed() -> None:
    text = (DATA / "malformed.aliases").read_text()
    result = parse_aliases(text, "malformed.aliases")
    assert [e.name for e in result.entries] == ["good", "after"]
    assert [w.split(": ", 1)[0] for w in result.warnings] == [
        f"malformed.aliases, line {n}" for n in (2, 3, 4, 5, 6, 7, 8)]


def test_sample_file_indented_start() -> None:
    result = parse_aliases((DATA / "indented.aliases").read_text(), "indented.aliases")
    assert [(e.name, e.targets) for e in result.entries] == [("ok", ["yes"])]
    assert result.warnings == [
        "indented.aliases, line 1: logical line must not start with whitespace"]
