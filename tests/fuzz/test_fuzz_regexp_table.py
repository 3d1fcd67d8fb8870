"""Fuzz target: ``regexp:``, ``pcre:`` and ``cidr:`` rule files
(postpy.tables.regexp_table, cidr_table, on pattern_table), read by cleanup
for header_checks and body_checks and by ``postmap -q``.

The documented way to refuse a rule file is :class:`TableError` naming the
table file and the line ("``regexp map FILE, line N: ...``"); nothing else
may come out of opening a table (no ``re.error``, ValueError, RecursionError,
warnings turned into exceptions, ...).  Properties: a table that opens
answers lookups of short keys with a string or None and raises nothing;
every error names the file and a line within it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.mutate import inputs
from postpy.tables import maps
from postpy.tables.lmdb_table import TableError

SAMPLES = [
    b"/^Subject: make money fast/ REJECT\n/^To: friend@public\\.com/ REJECT\n",
    b"# c\nif !/^owner-/\n/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead\nendif\n",
    b"~^[[:alnum:]+/]{60,}$~ OK\n/[%!@].*[%!@]/ 550 routing\n/^postmaster@/ OK\n",
    b"/^Content-(Disposition|Type).*name\\s*=\\s*\"?([^;]*(\\.|=2E)(\n  ade|adp|exe|\n"
    b"  \\{[[:xdigit:]]{8}(?:-[[:xdigit:]]{4}){3}\\}|\n  vb[esx]?))(\\?=)?\"?\\s*(;|$)/x\n"
    b"    REJECT Attachment \"$2\" .$4\n",
    b"!/(a)/ x\n/a\\/b/imsx $$ $(1)\n|x|AEUX y\nIF /a/\nIF /b/\n/c/ d\nENDIF\nENDIF\n",
    b"/\\(a\\)\\{2\\}/x $1\n/\\<w\\>/ w\n/[\\.]/ b\n/a$/m e\n/(?<n>a)\\k<n>\\Q*\\E\\z/ q\n",
    b"192.168.1.1 OK\n192.168.0.0/16 REJECT\n2001:db8::1 OK\n2001:db8::/32 REJECT\n",
    b"if 10.0.0.0/8\n!10.1.0.0/16 x\n[10.2.0.0]/16 y\n[10.3.0.0/16] z\nendif\n::/0 six\n",
    b"/a\n  /b/ x\n\n  # c\n\tendif\n/(/ x\n/[[:nope:]]/ y\n",
]
KINDS = ("regexp", "pcre", "cidr")
KEYS = ["", "a", "ab", "Subject: x\n\tY", "10.1.2.3", "2001:db8::1", "aaaaaaaaaaaa",
        "owner-x@y", "caf\udce9"]


@pytest.fixture(scope="module")
def directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-fuzz-regexp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def check(directory: Path, kind: str, data: bytes) -> None:
    path = directory / "table"
    path.write_bytes(data)
    maps.clear_cache()
    label = re.escape(f"{kind} map {path}")
    try:
        table = maps.open_table(f"{kind}:{path}", warn=False)
    except TableError as exc:
        m = re.match(rf"{label}, line (\d+): \S", str(exc))
        if m is None:
            assert re.match(rf"{label}: \S", str(exc)), exc
            return
        assert 1 <= int(m.group(1)) <= data.count(b"\n") + 1, exc
        return
    for key in KEYS:
        found = table.lookup(key)
        assert found is None or isinstance(found, str)


@given(st.sampled_from(KINDS), inputs(SAMPLES))
@example("regexp", b"/" + b"(" * 3000 + b"a" + b")" * 3000 + b"/ x\n")
@example("pcre", b"/a{" + b"9" * 5000 + b"}/ x\n")
@example("pcre", b"/[[:^alpha:]]/ x\n")
@example("regexp", b"/a/ $" + b"9" * 5000 + b"\n")
@example("cidr", b"10.0.0.0/" + b"9" * 5000 + b" x\n")
@example("pcre", b"/[a-\\d]/ x\n")
@example("regexp", b"/[[=a=]b-]/ x\n/[]-a]/ y\n")
@example("pcre", b"/\\x{110000}/ x\n/(?'n'a)/ y\n")
def test_rule_file(directory: Path, kind: str, data: bytes) -> None:
    check(directory, kind, data)
