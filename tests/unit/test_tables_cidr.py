"""cidr: tables (cidr_table.py on the pattern_table.py engine)."""

from __future__ import annotations

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


def table(tmp_path: Path, text: str) -> maps.Table:
    path = tmp_path / "t.cidr"
    path.write_text(text)
    return maps.open_table(f"cidr:{path}", warn=False)


SAMPLE = """\
# rule order matters
192.168.1.1           OK
192.168.0.0/16        REJECT local net
2001:db8::1           OK six
2001:DB8::/32         REJECT six net
[10.0.0.0]/8          bracket one
[172.16.0.0/12]       bracket two
[2001:db9::]/32       bracket six
!127.0.0.0/8          not loopback
"""
LOOKUPS = [
    ("192.168.1.1", "OK"),
    ("192.168.7.7", "REJECT local net"),
    ("2001:db8::1", "OK six"),
    ("2001:0db8:0000::0001", "OK six"),                  # compared as an address
    ("2001:db8:1::5", "REJECT six net"),
    ("10.9.8.7", "bracket one"),
    ("172.31.255.255", "bracket two"),
    ("2001:db9:ffff::", "bracket six"),
    ("8.8.8.8", "not loopback"),
    ("127.0.0.1", None),
    ("::1", "not loopback"),                              # IPv4 patterns never match IPv6...
    ("::ffff:127.0.0.1", "not loopback"),                 # ...not even mapped addresses
    ("[192.168.1.1]", None),                              # keys that are not addresses
    ("mail.example.org", None),
    ("010.0.0.1", None),
    ("fe80::1%eth0", None),
    ("10.0.0.1/32", None),
    ("", None),
]


@pytest.mark.parametrize(("key", "expected"), LOOKUPS)
def test_lookup(tmp_path: Path, key: str, expected: str | None) -> None:
    assert table(tmp_path, SAMPLE).lookup(key) == expected


def test_if_endif_and_everything(tmp_path: Path) -> None:
    t = table(tmp_path, "if 10.0.0.0/8\n10.1.0.0/16 inner\nendif\n10.0.0.0/8 outer\n"
                        "if !10.0.0.0/8\n0.0.0.0/0 v4\n::/0 v6\nendif\n")
    assert [t.lookup(k) for k in ("10.1.2.3", "10.2.3.4", "11.0.0.1", "2001:db8::7")] == [
        "inner", "outer", "v4", "v6"]


def test_continuation_and_prefix_forms(tmp_path: Path) -> None:
    t = table(tmp_path, "10.0.0.0/08 eight,\n  continued\n0.0.0.0/0\tdefault  route\n")
    assert t.lookup("10.1.1.1") == "eight,  continued"
    assert t.lookup("1.1.1.1") == "default  route"


MALFORMED = [
    ("10.0.0.1/8 x\n", '1: non-null host address bits in "10.0.0.1/8", perhaps you should use '
                       '"10.0.0.0/8" instead'),
    ("10.0.0.0/33 x\n", '1: bad mask length in "10.0.0.0/33"'),
    ("::/129 x\n", '1: bad mask length in "::/129"'),
    ("10.0.0.0/ x\n", '1: bad mask value in "10.0.0.0/"'),
    ("10.0.0.0/-1 x\n", '1: bad mask value in "10.0.0.0/-1"'),
    ("10.0.0.0/99999999999 x\n", '1: bad mask value'),
    ("10.0.0.0\n", "1: no lookup result"),
    ("# c\nfoo x\n", '2: bad address pattern: "foo"'),
    ("010.0.0.0/8 x\n", '1: bad address pattern: "010.0.0.0/8"'),
    ("[10.0.0.0 x\n", '1: bad address pattern: "[10.0.0.0"'),
    ("[10.0.0.0]x x\n", '1: bad address pattern: "[10.0.0.0]x"'),
    ("fe80::1%eth0 x\n", '1: bad address pattern: "fe80::1%eth0"'),
    ("1.2.3.4 ok\nif 10.0.0.0/8\n", "2: IF has no matching ENDIF"),
    ("endif\n", "1: ENDIF without matching IF"),
    ("if 10.0.0.0/8 junk\nendif\n", '1: extra text after IF statement: "junk"'),
    ("\t1.2.3.4 x\n", "1: logical line must not start with whitespace"),
]


@pytest.mark.parametrize(("text", "error"), MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(TableError) as info:
        table(tmp_path, text)
    assert str(info.value).startswith(f"cidr map {tmp_path / 't.cidr'}, line {error}"), str(info.value)


def test_inline_and_listing(tmp_path: Path) -> None:
    t = maps.open_table("cidr:{ {10.0.0.0/8 ten}, {::/0 six} }", warn=False)
    assert (t.lookup("10.0.0.9"), t.lookup("::2"), t.lookup("11.0.0.1")) == ("ten", "six", None)
    with pytest.raises(TableError, match="does not support listing"):
        t.items()
