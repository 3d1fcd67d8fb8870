"""Virtual alias expansion (cleanup.virtual_alias) and the routing of virtual alias domains (qmgr.resolve)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.cleanup.envelope import Refusal
from postpy.cleanup.virtual_alias import EXPANSION_ERROR, LOOKUP_ERROR, VirtualAlias
from postpy.config.maincf import Config
from postpy.qmgr.resolve import VIRTUAL_ALIAS_UNKNOWN, resolve
from postpy.tables.address_map import AddressMap
from postpy.tables.maps import clear_cache
from postpy.util import maillog


@pytest.fixture(autouse=True)
def log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "maillog"
    maillog.setup("cleanup", maillog_file=str(path))
    clear_cache()
    yield path
    clear_cache()


def virtual(entries: str, **limits: int) -> VirtualAlias:
    table = AddressMap("virtual_alias_maps", [f"inline:{{{entries}}}"], delimiter="+",
                       propagate=True, myorigin="origin.example")
    return VirtualAlias(table, **limits)


@pytest.mark.parametrize(("entries", "address", "result"), [
    ("{a@v.test=b@example, c@example}", "a@v.test", ["b@example", "c@example"]),       # one to many
    ("a@v.test=b@v.test, b@v.test=c@example", "a@v.test", ["c@example"]),              # recursion
    ("{a@v.test=b@v.test, d@example}, b@v.test=c@example", "a@v.test", ["c@example", "d@example"]),
    ("{a@v.test=a@v.test, b@example}", "a@v.test", ["a@v.test", "b@example"]),         # to itself: kept
    ("{a@v.test=A@V.test, b@example}", "a@v.test", ["a@v.test", "b@example"]),
    ("@v.test=catch@example", "anyone@v.test", ["catch@example"]),                     # catch-all
    ("a@v.test=x@example, @v.test=catch@example", "a@v.test", ["x@example"]),
    ("@v.test=@w.test", "joe+ext@v.test", ["joe+ext@w.test"]),                          # domain rename
    ("a@v.test=b@example", "a+ext@v.test", ["b+ext@example"]),                          # extension
    ("a@v.test=b@example", "z@v.test", ["z@v.test"]),                                   # no mapping
    ("{a@v.test=b@v.test, c@v.test}, {c@v.test=a@v.test}", "a@v.test", ["b@v.test"]),  # a comes back
    ("a@v.test=b@v.test, {b@v.test=b@v.test, a@v.test}", "a@v.test", ["b@v.test"]),
    ("{a@v.test=b@v.test, c@v.test}, b@v.test=d@example, c@v.test=d@example", "a@v.test", ["d@example"]),
    ("a@v.test=local", "a@v.test", ["local@origin.example"]),
])
def test_expand(entries: str, address: str, result: list[str]) -> None:
    assert virtual(entries).expand(address, "QID") == result


@pytest.mark.parametrize(("entries", "address"), [
    ("a@v.test=b@v.test, b@v.test=a@v.test", "a@v.test"),
    ("a@v.test=b@v.test, b@v.test=c@v.test, c@v.test=a@v.test", "a@v.test"),
    ("{a@v.test=b@v.test, c@v.test}, b@v.test=a@v.test, c@v.test=b@v.test", "a@v.test"),
    ("@v.test=@w.test, @w.test=@v.test", "joe@v.test"),
])
def test_loop_is_refused_for_good(entries: str, address: str, log: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Refusal) as caught:
        virtual(entries).expand(address, "QID")
    assert time.monotonic() - started < 1
    assert (caught.value.status, caught.value.reply) == ("perm", f"5.4.6 Virtual alias loop for <{address}>")
    assert f"QID: virtual_alias_maps loop for {address}" in log.read_text()


def test_recursion_limit() -> None:
    chain = ", ".join(f"u{i}@v.test=u{i + 1}@v.test" for i in range(6))
    assert virtual(chain, recursion_limit=6).expand("u0@v.test") == ["u6@v.test"]
    with pytest.raises(Refusal) as caught:
        virtual(chain, recursion_limit=5).expand("u0@v.test")
    assert (caught.value.status, caught.value.reply) == ("temp", EXPANSION_ERROR)


def test_recursion_limit_stops_an_ever_growing_extension() -> None:
    # a+x -> (a@ matched without +x) b+x... -> b@ matched -> a+x+x ...: never the same address
    entries = "a@v.test=b@v.test, b@v.test=a+y@v.test"
    with pytest.raises(Refusal) as caught:
        virtual(entries, recursion_limit=50).expand("a+x@v.test")
    assert caught.value.status == "temp"


def test_expansion_limit(log: Path) -> None:
    members = ", ".join(f"m{i}@example" for i in range(5))
    entries = f"{{list@v.test={members}}}"
    assert len(virtual(entries, expansion_limit=5).expand("list@v.test")) == 5
    with pytest.raises(Refusal) as caught:
        virtual(entries, expansion_limit=4).expand("list@v.test", "QID")
    assert (caught.value.status, caught.value.reply) == ("temp", EXPANSION_ERROR)
    assert "QID: unreasonable virtual_alias_maps map expansion size for list@v.test" in log.read_text()


@pytest.mark.parametrize("entries", ["a@v.test=<<<", "{a@v.test=}", "{a@v.test=b@, c}", "a@v.test=@"])
def test_malformed_value_is_temporary(entries: str, log: Path) -> None:
    with pytest.raises(Refusal) as caught:
        virtual(entries).expand("a@v.test", "QID")
    assert (caught.value.status, caught.value.reply) == ("temp", LOOKUP_ERROR)
    assert "malformed value for key a@v.test" in log.read_text()


def test_table_failure_is_temporary(tmp_path: Path) -> None:
    broken = VirtualAlias(AddressMap("virtual_alias_maps", [f"lmdb:{tmp_path}/missing"]))
    with pytest.raises(Refusal) as caught:
        broken.expand("a@v.test")
    assert (caught.value.status, caught.value.reply) == ("temp", LOOKUP_ERROR)


def test_no_table_changes_nothing(tmp_path: Path) -> None:
    assert VirtualAlias().expand("a@v.test") == ["a@v.test"]
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example"})
    found = VirtualAlias.from_config(cfg)
    assert not found and (found.recursion_limit, found.expansion_limit) == (1000, 1000)


# -- routing of virtual alias domains -------------------------------------------------

def config(tmp_path: Path, **params: str) -> Config:
    base = {"myhostname": "mx.example", "mydestination": "$myhostname, localhost",
            "inet_interfaces": "127.0.0.1",
            "virtual_alias_maps": "inline:{v.test=domain, a@v.test=b@example}"}
    base.update(params)
    return Config(str(tmp_path), explicit=base)


@pytest.mark.parametrize(("params", "address", "error"), [
    ({}, "nobody@v.test", VIRTUAL_ALIAS_UNKNOWN),
    ({}, "NOBODY@V.TEST", VIRTUAL_ALIAS_UNKNOWN),
    ({}, "a@v.test", VIRTUAL_ALIAS_UNKNOWN),            # cleanup did not map it: nothing else will
    ({}, "x@sub.v.test", ""),
    ({}, "x@other.example", ""),
    ({}, "root@localhost", ""),
    ({"virtual_alias_domains": "v.test, mx.example"}, "root@mx.example", ""),     # local wins
    ({"virtual_alias_domains": ""}, "nobody@v.test", ""),
    ({"virtual_alias_domains": ".v.test"}, "x@sub.v.test", VIRTUAL_ALIAS_UNKNOWN),
    ({"transport_maps": "inline:{v.test=smtp:[192.0.2.1], *=smtp:[192.0.2.2]}"}, "nobody@v.test",
     VIRTUAL_ALIAS_UNKNOWN),
])
def test_virtual_alias_domain_route(tmp_path: Path, params: dict[str, str], address: str, error: str) -> None:
    route = resolve(config(tmp_path, **params), address)
    assert route.error == error
    if error:
        assert (route.transport, route.retry) == ("error", False)


def test_virtual_alias_domain_table_failure_defers(tmp_path: Path) -> None:
    route = resolve(config(tmp_path, virtual_alias_domains=f"lmdb:{tmp_path}/none"), "x@v.test")
    assert route.retry and route.error.startswith("4.3.0 virtual_alias_domains lookup failure")
