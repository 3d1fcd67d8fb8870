"""type:name tables (maps.py) and the postmap source syntax (source_parser.py)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.tables import maps
from postpy.tables.lmdb_table import build
from postpy.tables.source_parser import (
    DUP_IGNORE,
    DUP_REPLACE,
    Entry,
    dedupe,
    logical_lines,
    parse_source,
)
from postpy.util import maillog

DATA = Path(__file__).resolve().parent.parent / "data" / "aliases"


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path) -> Iterator[None]:
    maillog.setup("test", maillog_file=str(tmp_path / "maillog"), stderr=True)
    maps.clear_cache()
    yield
    maps.clear_cache()


# --- source_parser -----------------------------------------------------------

SOURCE_GOOD = [
    ("key value\n", [("key", "value", 1)]),
    ("Key   Value With  Spaces  \n", [("key", "Value With  Spaces", 1)]),
    ("a\tb\n# c d\n\ne f\n", [("a", "b", 1), ("e", "f", 4)]),
    ("a b,\n  c\n\n  # note\n\td\n", [("a", "b,  c\td", 1)]),
    ('"two words" v\n', [("two words", "v", 1)]),
    ('"q\\"uote\\\\" v\n', [('q"uote\\', "v", 1)]),
    ("a b # not a comment\n", [("a", "b # not a comment", 1)]),
    ("a b\r\n", [("a", "b", 1)]),
]


@pytest.mark.parametrize(("text", "expected"), SOURCE_GOOD)
def test_source_good(text: str, expected: list[tuple[str, str, int]]) -> None:
    result = parse_source(text, "src")
    assert result.warnings == []
    assert [(e.key, e.value, e.line) for e in result.entries] == expected


SOURCE_BAD = [
    ("lonely\n", "src, line 1: expected format: key whitespace value", []),
    ("lonely   \n", "src, line 1: expected format: key whitespace value", []),
    ('"unterminated v\n', "src, line 1: expected format", []),
    ('"glued"v\n', "src, line 1: expected format", []),
    ('"" v\n', "src, line 1: expected format", []),
    ("  indented v\nk v\n", "src, line 1: logical line must not start with whitespace", ["k"]),
    ("a 1\nA 2\n", 'src, line 2: duplicate entry: "a"', ["a"]),
    ("k \udcff\nj v\n", "src, line 1: non-UTF-8 input", ["j"]),
]


@pytest.mark.parametrize(("text", "warning", "keys"), SOURCE_BAD)
def test_source_bad(text: str, warning: str, keys: list[str]) -> None:
    result = parse_source(text, "src")
    assert len(result.warnings) == 1 and result.warnings[0].startswith(warning), result.warnings
    assert [e.key for e in result.entries] == keys


def test_source_options() -> None:
    assert [e.key for e in parse_source("Key v\n", fold_case=False).entries] == ["Key"]
    assert parse_source("a 1\na 2\n", duplicates=DUP_REPLACE).entries == [Entry("a", "2", 2)]
    ignored = parse_source("a 1\na 2\n", duplicates=DUP_IGNORE)
    assert ignored.entries == [Entry("a", "1", 1)] and ignored.warnings == []


def test_dedupe_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError):
        dedupe([], "sometimes", [], "src")


def test_logical_lines_keep_leading_whitespace() -> None:
    warnings: list[str] = []
    assert list(logical_lines("a\n  b\nc\n", "src", warnings)) == [(1, "a  b"), (3, "c")]
    assert warnings == []


def test_sample_map() -> None:
    result = parse_source((DATA / "virtual.map").read_text(), "virtual.map")
    assert {e.key: e.value for e in result.entries} == {
        "info@example.com": "alice", "sales@example.com": "bob, carol",
        "two words": "quoted key", "long@example.com": "first,\tsecond"}
    assert result.warnings == ["virtual.map, line 7: expected format: key whitespace value"
                               " -- ignoring this line"]


# --- maps --------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "kind", "name"), [
    ("lmdb:/etc/aliases", "lmdb", "/etc/aliases"),
    ("hash:/etc/aliases", "hash", "/etc/aliases"),
    ("/etc/aliases", "lmdb", "/etc/aliases"),
    ("inline:{a=b}", "inline", "{a=b}"),
    ("proxy:lmdb:/x", "proxy", "lmdb:/x"),
    ("/odd:path", "lmdb", "/odd:path"),
])
def test_split_spec(spec: str, kind: str, name: str) -> None:
    assert maps.split_spec(spec) == (kind, name)


def test_lmdb_table(tmp_path: Path) -> None:
    build(str(tmp_path / "aliases.lmdb"), [("root", "admin")])
    for spec in (f"lmdb:{tmp_path}/aliases", f"{tmp_path}/aliases", f"proxy:lmdb:{tmp_path}/aliases"):
        table = maps.open_table(spec)
        assert table.lookup("Root") == "admin"
        assert table.items() == [("root", "admin")]
    assert maps.open_table(f"lmdb:{tmp_path}/aliases") is maps.open_table(f"lmdb:{tmp_path}/aliases")


def test_lmdb_table_sees_rebuild(tmp_path: Path) -> None:
    db = str(tmp_path / "aliases.lmdb")
    build(db, [("root", "one")])
    table = maps.open_table(f"lmdb:{tmp_path}/aliases")
    assert table.lookup("root") == "one"
    build(db, [("root", "two")])
    assert table.lookup("root") == "two"


def test_hash_and_btree_read_as_lmdb_and_warn_once(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    build(str(tmp_path / "a.lmdb"), [("k", "v")])
    build(str(tmp_path / "b.lmdb"), [("k", "w")])
    assert maps.open_table(f"hash:{tmp_path}/a").lookup("k") == "v"
    assert maps.open_table(f"hash:{tmp_path}/b").lookup("k") == "w"
    assert maps.open_table(f"btree:{tmp_path}/a").lookup("k") == "v"
    err = capsys.readouterr().err
    assert err.count("warning: hash: tables are read as lmdb") == 1
    assert err.count("warning: btree: tables are read as lmdb") == 1


def test_missing_lmdb_is_an_error_and_not_cached(tmp_path: Path) -> None:
    spec = f"lmdb:{tmp_path}/later"
    with pytest.raises(maps.TableError, match="later.lmdb"):
        maps.open_table(spec)
    build(str(tmp_path / "later.lmdb"), [("a", "b")])
    assert maps.open_table(spec).lookup("a") == "b"


@pytest.mark.parametrize(("spec", "key", "value"), [
    ("inline:{a=1, b=2}", "b", "2"),
    ("inline:{a=1, b=2}", "B", "2"),
    ("inline:{a=1, b=2}", "c", None),
    ("inline:{ { key = text, with comma }, x=y }", "key", "text, with comma"),
    ("inline:{}", "a", None),
    ("static:OK", "anything", "OK"),
    ("static:{some text}", "x", "some text"),
])
def test_inline_and_static(spec: str, key: str, value: str | None) -> None:
    assert maps.open_table(spec).lookup(key) == value


def test_inline_no_fold() -> None:
    table = maps.open_table("inline:{Key=v}", fold=False)
    assert table.lookup("Key") == "v" and table.lookup("key") is None
    assert table.items() == [("Key", "v")]


@pytest.mark.parametrize(("spec", "message"), [
    ("inline:a=b", "need inline:"),
    ("inline:{novalue}", 'need "key=value"'),
    ("inline:{=x}", 'need "key=value"'),
    ("unix:group.byname", "unknown unix table"),
    ("nis:/etc/x", "unsupported dictionary type: nis"),
    ("lmdb:", "missing table file name"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(maps.TableError, match=message):
        maps.open_table(spec)


def test_static_and_unix_cannot_list() -> None:
    with pytest.raises(maps.TableError, match="listing"):
        maps.open_table("static:x").items()
    with pytest.raises(maps.TableError, match="listing"):
        maps.open_table("unix:passwd.byname").items()


def test_unix_passwd() -> None:
    me = pwd.getpwuid(os.getuid())
    table = maps.open_table("unix:passwd.byname")
    found = table.lookup(me.pw_name)
    assert found and found.split(":")[0] == me.pw_name and found.split(":")[2] == str(me.pw_uid)
    assert table.lookup("no-such-user-postpy-test") is None
    assert table.lookup("bad\0name") is None


def test_texthash_reads_source_and_reloads(tmp_path: Path) -> None:
    source = tmp_path / "virtual"
    source.write_text("Info@example.com alice\n")
    table = maps.open_table(f"texthash:{source}")
    assert table.lookup("info@EXAMPLE.com") == "alice"
    source.write_text("info@example.com bob\nother x\n")
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert table.lookup("info@example.com") == "bob"
    assert table.items() == [("info@example.com", "bob"), ("other", "x")]
    with pytest.raises(maps.TableError, match="No such file"):
        maps.open_table(f"texthash:{tmp_path}/missing")


def test_lookup_in_maps_first_hit(tmp_path: Path) -> None:
    build(str(tmp_path / "aliases.lmdb"), [("root", "from-lmdb"), ("bob", "b")])
    specs = ["inline:{root=from-inline}", f"lmdb:{tmp_path}/aliases", "static:fallback"]
    assert maps.lookup_in_maps(specs, "root") == "from-inline"
    assert maps.lookup_in_maps(specs, "bob") == "b"
    assert maps.lookup_in_maps(specs, "zed") == "fallback"
    assert maps.lookup_in_maps(specs[:2], "zed") is None
    assert maps.lookup_in_maps([], "root") is None


# --- a table that cannot be opened is named in the log (and by postpy check) ----

def test_missing_table_is_named_in_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"lmdb:{tmp_path}/aliases"
    for _ in range(2):                       # every failed attempt says why
        with pytest.raises(maps.TableError):
            maps.lookup_in_maps(["inline:{a=b}", spec], "root")
    expected = (f"warning: {spec} is unavailable. open database {tmp_path}/aliases.lmdb: "
                f"No such file or directory")
    log = (tmp_path / "maillog").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in log] == [expected, expected]
    build(f"{tmp_path}/aliases.lmdb", [("root", "admin")])
    assert maps.lookup_in_maps([spec], "root") == "admin"
    assert len((tmp_path / "maillog").read_text().splitlines()) == 2
    capsys.readouterr()


def test_no_warning_when_asked(tmp_path: Path) -> None:
    with pytest.raises(maps.TableError, match="No such file"):
        maps.open_table(f"texthash:{tmp_path}/none", warn=False)
    assert not (tmp_path / "maillog").exists() or (tmp_path / "maillog").read_text() == ""


def test_check_names_every_unavailable_table(tmp_path: Path) -> None:
    from postpy.config.maincf import Config
    from postpy.tables.check import unavailable_tables

    build(f"{tmp_path}/good.lmdb", [("a", "b")])
    cfg = Config(str(tmp_path), {
        "alias_maps": f"lmdb:{tmp_path}/aliases, lmdb:{tmp_path}/good",
        "alias_database": f"lmdb:{tmp_path}/aliases",
        "transport_maps": f"texthash:{tmp_path}/transport",
        "smtpd_sender_login_maps": "mysql:/etc/x.cf",
        "virtual_alias_maps": f"hash:{tmp_path}/virtual",
    })
    assert unavailable_tables(cfg) == [
        f"alias_database: lmdb:{tmp_path}/aliases is unavailable. open database "
        f"{tmp_path}/aliases.lmdb: No such file or directory",
        "smtpd_sender_login_maps: mysql:/etc/x.cf is unavailable. unsupported dictionary type: "
        "mysql (in mysql:/etc/x.cf)",
        f"transport_maps: texthash:{tmp_path}/transport is unavailable. open {tmp_path}/transport: "
        "No such file or directory",
        f"virtual_alias_maps: hash:{tmp_path}/virtual is unavailable. open database "
        f"{tmp_path}/virtual.lmdb: No such file or directory",
    ]
    build(f"{tmp_path}/aliases.lmdb", [])
    (tmp_path / "transport").write_text("")
    cfg.explicit.pop("smtpd_sender_login_maps")
    cfg.explicit.pop("virtual_alias_maps")
    assert unavailable_tables(cfg) == []
