"""lmdb tables: atomic build, lock-free readers that follow rebuilds."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from postpy.tables import lmdb_table
from postpy.tables.lmdb_table import LmdbTable, TableError, build, read_all, update_lock


def test_build_and_lookup(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    assert build(db, [("root", "admin"), ("bob", "b@example.com")]) == 2
    table = LmdbTable(db)
    assert table.lookup("root") == "admin"
    assert table.lookup("ROOT") == "admin"
    assert table.lookup("nobody") is None
    assert table.lookup("") is None
    assert table.lookup("x" * 600) is None
    assert table.items() == [("bob", "b@example.com"), ("root", "admin")]
    table.close()


def test_no_fold(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("Key", "v")])
    assert LmdbTable(db, fold=False).lookup("Key") == "v"
    assert LmdbTable(db, fold=True).lookup("Key") is None


def test_utf8_and_surrogates(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("jürgen", "ü"), ("raw", "caf\udce9")])
    table = LmdbTable(db)
    assert table.lookup("JÜRGEN") == "ü"
    assert table.lookup("raw") == "caf\udce9"


def test_empty_table_is_readable(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    assert build(db, []) == 0
    assert LmdbTable(db).lookup("x") is None
    assert read_all(db) == []


def test_large_values_grow_the_map(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    items = [(f"k{i}", "v" * 5000) for i in range(800)]
    assert build(db, items) == 800
    assert LmdbTable(db).lookup("k799") == "v" * 5000


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_mode_and_no_leftovers(tmp_path: Path, mode: int) -> None:
    db = tmp_path / "t.lmdb"
    build(str(db), [("a", "b")], mode=mode)
    assert stat.S_IMODE(db.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.lmdb"]


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="open database .*No such file"):
        LmdbTable(str(tmp_path / "none.lmdb"))


def test_not_an_lmdb_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.lmdb"
    path.write_bytes(b"hello" * 2000)
    with pytest.raises(TableError, match="open database"):
        LmdbTable(str(path))


def test_bad_key_keeps_old_table(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "old")])
    before = os.stat(db).st_ino
    with pytest.raises(TableError, match="cannot store key"):
        build(db, [("a", "new"), ("k" * 600, "x")])
    assert os.stat(db).st_ino == before
    assert LmdbTable(db).lookup("a") == "old"


def test_failed_write_keeps_old_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "old")])

    def broken(tmp: str, items: list[tuple[bytes, bytes]]) -> None:
        Path(tmp).write_bytes(b"half a table")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lmdb_table, "_write_env", broken)
    with pytest.raises(TableError, match="No space left"):
        build(db, [("a", "new")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.lmdb"]
    assert read_all(db) == [("a", "old")]


def test_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot create"):
        build(str(tmp_path / "no" / "such" / "t.lmdb"), [("a", "b")])


def test_reader_follows_rebuild_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "1")])
    table = LmdbTable(db)
    assert table.lookup("a") == "1"
    build(db, [("a", "2"), ("b", "3")])
    assert table.lookup("a") == "2"
    assert table.lookup("b") == "3"


def test_reader_follows_same_inode_mtime_change(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "1")])
    table = LmdbTable(db)
    assert table.lookup("a") == "1"
    st = os.stat(db)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert table.lookup("a") == "1"          # re-opened (shared env), still readable


def test_two_readers_of_one_file(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "1")])
    first, second = LmdbTable(db), LmdbTable(db)
    assert first.lookup("a") == second.lookup("a") == "1"
    first.close()
    assert second.lookup("a") == "1"
    build(db, [("a", "2")])
    assert second.lookup("a") == "2"
    assert read_all(db) == [("a", "2")]


def test_reader_error_after_removal(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("a", "1")])
    table = LmdbTable(db)
    os.unlink(db)
    with pytest.raises(TableError, match="No such file"):
        table.lookup("a")


_REBUILDER = """
import sys
from postpy.tables.lmdb_table import build
db, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(rounds):
    tag = "ab"[n % 2]
    build(db, [(f"key{i:05d}", tag * 40) for i in range(count)])
"""


def test_concurrent_reader_never_sees_half_a_table(tmp_path: Path) -> None:
    """A reader that snapshots the table while another process rebuilds it
    over and over sees a whole old table or a whole new one."""
    db = str(tmp_path / "t.lmdb")
    count = 3000
    build(db, [(f"key{i:05d}", "a" * 40) for i in range(count)])
    table = LmdbTable(db)
    writer = subprocess.Popen([sys.executable, "-c", _REBUILDER, db, str(count), "40"])
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            snapshot = table.items()
            assert len(snapshot) == count
            values = {value for _key, value in snapshot}
            assert values in ({"a" * 40}, {"b" * 40})
            seen |= values
            assert table.lookup("key00000") in ("a" * 40, "b" * 40)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(timeout=10)
    assert writer.returncode == 0
    assert len(table.items()) == count
    assert seen                     # the reader did read while the writer ran


def test_update_lock_serialises_writers(tmp_path: Path) -> None:
    db = str(tmp_path / "t.lmdb")
    build(db, [("n", "0")])
    entered = threading.Event()
    results: list[str] = []

    def second_writer() -> None:
        with update_lock(db):
            entered.set()
            results.append(dict(read_all(db))["n"])

    with update_lock(db):
        worker = threading.Thread(target=second_writer)
        worker.start()
        assert not entered.wait(0.3)         # blocked while we hold the lock
        build(db, [("n", "1")])              # replaces the locked file
    worker.join(timeout=10)
    assert entered.is_set()
    assert results == ["1"]                  # it re-checked and read the new file


def test_update_lock_without_table(tmp_path: Path) -> None:
    db = str(tmp_path / "new.lmdb")
    with update_lock(db):
        build(db, [("a", "b")])
    assert read_all(db) == [("a", "b")]


@pytest.mark.parametrize(("key", "problem"), [
    ("", "empty key"), ("k" * 511, None), ("k" * 512, "key is 512 bytes long"), ("é" * 256, "key is 512"),
])
def test_key_problem(key: str, problem: str | None) -> None:
    found = lmdb_table.key_problem(key)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))
