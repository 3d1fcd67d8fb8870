"""Fuzz target: aliases(5) sources and ``:include:`` files
(postpy.tables.aliases_parser, read by postalias and by local delivery,
and postpy.local.dotforward.read_text, local's reader of include files).

The parser's documented way to refuse input is a warning
(``SOURCE, line N: ...``) for the entry, never an exception; the include
reader may only raise OSError.  Properties: every entry has a name and at
least one target; the value stored in the table splits back into exactly
the targets it was built from (local re-parses it at delivery time); each
target, parsed again on its own, is the same target; an include file's text
gives the same targets whether read from disk or passed directly.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import example, given

from fuzz.mutate import inputs, text_inputs
from postpy.local.dotforward import read_text, unsafe
from postpy.tables.aliases_parser import (
    KINDS,
    Target,
    parse_aliases,
    parse_include,
    parse_target,
    parse_value,
    split_value,
)

SOURCE = "/etc/postpy/aliases"
WARNING = re.compile(rf"{re.escape(SOURCE)}, line \d+: \S")

SAMPLES = [
    "postmaster: root\nroot: alice\n",
    '# comment\nstaff: alice, bob@remote.example, "|/usr/bin/logger staff"\n',
    "files: /var/tmp/archive, /var/tmp/maildir/\n",
    "list: :include:/etc/postpy/list\nowner-list: alice\nlist-request: \\alice\n",
    'robot: "|/usr/bin/procmail -a \\"x y\\"", Alice Smith <alice@example.org> (work)\n',
    'multi: a,\n  b,\n\tc@example.org\n\n  # inside\n  d\n',
    '"quoted name": alice\n"odd:name#x": bob\n',
    "bad line without colon\n: no name\nname:\nuser@domain: x\na,b: c\n",
    "lit: x@[127.0.0.1], y@[IPv6:::1], <@a.example,@b.example:z@c.example>\n",
    "dup: a\nDup: b\n  indented continuation\n",
    'x: "\\"@example.org, "|x"@example.org, (only a comment), <>\n',
    "jörg: jörg@bücher.example\n",
]
INCLUDES = [
    "# members\nalice\nbob, carol@remote.example\n",
    '"|cat > /dev/null"\n/var/tmp/out\n/var/tmp/maildir/\n\\alice\n',
    ":include:/etc/postpy/other\n\n  spaced@example.org  \n",
    "Ann <ann@example.org> (ann), \"b c\"@example.org\r\n",
]


def same_target(found: Target, again: Target | None) -> bool:
    return again is not None and (again.kind, again.value, again.raw) == (
        found.kind, found.value, found.raw)


def check_targets(targets: list[Target]) -> None:
    for target in targets:
        assert target.kind in KINDS
        assert target.value.strip() or target.kind != "address", target
        assert same_target(target, parse_target(target.raw)), target


# Found by this target: an unclosed quote ending in "\" was stored closed by
# an escaped quote; nested <...> was cut so that a comma after it was lost.
FOUND = ['x: "\\', 'x: Ann <Ann <ann@example.org>ann@example.org> (ann), "b c"@example.org']


@given(text_inputs(SAMPLES))
@example(FOUND[0])
@example(FOUND[1])
def test_alias_sources(text: str) -> None:
    for fold_case in (True, False):
        result = parse_aliases(text, SOURCE, fold_case=fold_case)
        for warning in result.warnings:
            assert WARNING.match(warning), warning
        for entry in result.entries:
            assert entry.name and entry.targets, entry
            if fold_case:
                assert entry.name == entry.name.lower()
            assert split_value(entry.value) == entry.targets, entry
            check_targets(parse_value(entry.value))


@given(text_inputs(SAMPLES + INCLUDES))
@example(FOUND[0][3:])
@example(FOUND[1][3:])
def test_alias_values(text: str) -> None:
    found = parse_value(text)
    check_targets(found)
    stored = ", ".join(t.raw for t in found)
    assert split_value(stored) == [t.raw for t in found]


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="postpy-fuzz-include-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@given(data=inputs([s.encode() for s in INCLUDES + SAMPLES]))
def test_include_files(scratch: str, data: bytes) -> None:
    path = os.path.join(scratch, "include")
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    try:
        text, st = read_text(path)
    except OSError:
        return
    assert unsafe(st) is None
    targets = parse_include(text)
    check_targets(targets)
    assert [(t.kind, t.value) for t in targets] == [
        (t.kind, t.value) for t in parse_include(data.decode("utf-8", "surrogateescape"))]
