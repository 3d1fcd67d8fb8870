"""canonical(5)/virtual(5) address lookups (tables.address_map) and domain lists (tables.domain_list)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.tables.address_map import AddressMap, MalformedResult, local_domain_test, lookup_keys
from postpy.tables.domain_list import DomainList
from postpy.tables.maps import TableError, clear_cache


@pytest.fixture(autouse=True)
def fresh_tables() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def is_local(domain: str) -> bool:
    return domain in ("localhost", "origin.example")


@pytest.mark.parametrize(("address", "keys"), [
    ("a@v.test", ["a@v.test", "@v.test"]),
    ("A+Foo@V.Test", ["a+foo@v.test", "a@v.test", "@v.test"]),
    ("a+foo@localhost", ["a+foo@localhost", "a@localhost", "a+foo", "a", "@localhost"]),
    ("root", ["root"]),
    ("+foo@v.test", ["+foo@v.test", "@v.test"]),              # nothing before the delimiter
    ('"a b"@v.test', ['"a b"@v.test', "@v.test"]),
    ("a@v.test.", ["a@v.test", "@v.test"]),
])
def test_lookup_keys(address: str, keys: list[str]) -> None:
    assert [k.text for k in lookup_keys(address, "+", is_local)] == keys


TABLE = ("inline:{a@v.test=b@example, {c@v.test=@y.test, d@z.test}, @w.test=@x.test, root=admin, "
         "{list@v.test=Bob <bob@example> (boss), carol}, {other@v.test=\"x y\"@example}, "
         "@catch.test=all@example}")


def amap(propagate: bool = True, myorigin: str = "origin.example", specs: list[str] | None = None) -> AddressMap:
    return AddressMap("virtual_alias_maps", specs or [TABLE], is_local=is_local, delimiter="+",
                      propagate=propagate, myorigin=myorigin)


@pytest.mark.parametrize(("address", "result", "key"), [
    ("a@v.test", ["b@example"], "a@v.test"),
    ("A@V.TEST", ["b@example"], "a@v.test"),
    ("a+Ext@v.test", ["b+Ext@example"], "a@v.test"),             # extension propagated
    ("c@v.test", ["c@y.test", "d@z.test"], "c@v.test"),          # @otherdomain: same user
    ("c+q@v.test", ["c+q@y.test", "d+q@z.test"], "c@v.test"),
    ("joe+x@w.test", ["joe+x@x.test"], "@w.test"),               # catch-all keeps the user
    ("root@localhost", ["admin@origin.example"], "root"),         # user key: local domain only
    ("list@v.test", ["bob@example", "carol@origin.example"], "list@v.test"),
    ("other@v.test", ['"x y"@example'], "other@v.test"),
    ("anyone@catch.test", ["all@example"], "@catch.test"),
])
def test_find(address: str, result: list[str], key: str) -> None:
    found = amap().find(address)
    assert found is not None
    assert (found.addresses, found.key) == (result, key)


@pytest.mark.parametrize("address", ["root@elsewhere.test", "x@v.test", "", "b@example"])
def test_not_found(address: str) -> None:
    assert amap().find(address) is None


def test_extension_not_propagated_when_off() -> None:
    found = amap(propagate=False).find("a+ext@v.test")
    assert found is not None and found.addresses == ["b@example"]
    found = amap(propagate=False).find("c+q@v.test")
    assert found is not None and found.addresses == ["c@y.test", "d@z.test"]


def test_unqualified_result_without_myorigin_stays() -> None:
    found = amap(myorigin="").find("root@localhost")
    assert found is not None and found.addresses == ["admin"]


def test_first_table_with_the_key_wins_and_keys_go_first() -> None:
    specs = ["inline:{@v.test=catchall@example}", "inline:{a@v.test=exact@example}"]
    found = amap(specs=specs).find("a@v.test")
    assert found is not None and found.addresses == ["exact@example"]


@pytest.mark.parametrize("value", ["", " ", "<<<", "@", "@bad..domain", "a@b@c", "group:;", "a@[1.2.3]",
                                   "a,,<"])
def test_malformed_values_are_table_errors(value: str) -> None:
    table = amap(specs=[f"inline:{{{{m@v.test={value}}}}}"])
    with pytest.raises(MalformedResult, match="malformed value for key m@v.test"):
        table.find("m@v.test")


def test_missing_table_is_a_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError):
        amap(specs=[f"lmdb:{tmp_path}/none"]).find("a@v.test")


def test_regexp_table_gets_the_whole_address(tmp_path: Path) -> None:
    rules = tmp_path / "virtual.re"
    rules.write_text("/^(.*)-list@v\\.test$/  $1@lists.example\n")
    found = amap(specs=[f"regexp:{rules}"]).find("Dev-List@v.test")
    assert found is not None and found.addresses == ["Dev@lists.example"]
    assert amap(specs=[f"regexp:{rules}"]).find("a@v.test") is None


def test_local_domain_test(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example", "myorigin": "origin.example",
                                          "mydestination": "$myhostname, localhost",
                                          "inet_interfaces": "127.0.0.1"})
    local = local_domain_test(cfg)
    assert local("origin.example") and local("MX.example") and local("[127.0.0.1]") and local("")
    assert not local("v.test") and not local("[192.0.2.1]")


def test_from_config(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example", "recipient_delimiter": "+",
                                          "virtual_alias_maps": "inline:{a@v.test=b}",
                                          "propagate_unmatched_extensions": "canonical"})
    table = AddressMap.from_config(cfg, "virtual_alias_maps", "virtual")
    assert not table.propagate and table.delimiter == "+" and table.myorigin == "mx.example"
    found = table.find("a+x@v.test")
    assert found is not None and found.addresses == ["b@mx.example"]
    assert not AddressMap.from_config(cfg, "canonical_maps", "canonical")


# -- domain lists -------------------------------------------------------------------

@pytest.mark.parametrize(("words", "domain", "match"), [
    (["v.test"], "v.test", True),
    (["v.test"], "V.TEST.", True),
    (["v.test"], "sub.v.test", False),
    ([".v.test"], "sub.v.test", True),
    ([".v.test"], "v.test", False),
    (["!sub.v.test", ".v.test"], "sub.v.test", False),
    (["!sub.v.test", ".v.test"], "a.v.test", True),
    (["inline:{v.test=x}"], "v.test", True),
    (["inline:{a@v.test=x}"], "v.test", False),                 # a user key is not the domain
    (["inline:{.v.test=x}"], "a.b.v.test", True),
    (["inline:{v.test=x}"], "a.v.test", False),
    ([], "v.test", False),
    (["v.test"], "", False),
])
def test_domain_list(words: list[str], domain: str, match: bool) -> None:
    assert DomainList.parse(words).matches(domain) is match


def test_domain_list_file(tmp_path: Path) -> None:
    listed = tmp_path / "domains"
    listed.write_text("# virtual alias domains\nv.test, w.test\n\n!x.v.test .v.test\n")
    domains = DomainList.parse([str(listed)])
    assert domains.matches("w.test") and domains.matches("y.v.test") and not domains.matches("x.v.test")
    with pytest.raises(TableError):
        DomainList.parse([str(tmp_path / "missing")])


def test_domain_list_table_failure(tmp_path: Path) -> None:
    with pytest.raises(TableError):
        DomainList.parse([f"lmdb:{tmp_path}/none"]).matches("v.test")
