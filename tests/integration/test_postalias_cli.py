"""postalias, newaliases and postmap run as real commands from .venv/bin."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent.parent / "data" / "aliases"

pytestmark = pytest.mark.skipif(not (BIN / "postalias").exists(),
                                reason="console scripts not installed (pip install -e .)")


def run(cmd: str, *args: str, stdin: str = "", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("MAIL_CONFIG", None)
    full_env.update(env or {})
    return subprocess.run([str(BIN / cmd), *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=full_env)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A config dir with main.cf, and a copy of the sample aliases."""
    (tmp_path / "main.cf").write_text(
        f"maillog_file = {tmp_path}/maillog\n"
        f"alias_database = lmdb:{tmp_path}/aliases\n")
    shutil.copy(DATA / "basic.aliases", tmp_path / "aliases")
    return tmp_path


def postalias(tree: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run("postalias", "-c", str(tree), *args, stdin=stdin)


def postmap(tree: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run("postmap", "-c", str(tree), *args, stdin=stdin)


# --- postalias ---------------------------------------------------------------

def test_build_and_query(tree: Path) -> None:
    src = str(tree / "aliases")
    res = postalias(tree, src)
    assert (res.returncode, res.stderr) == (0, "")
    assert (tree / "aliases.lmdb").exists()
    cases = {
        "root": "\\root, admin@example.org",
        "MAILER-DAEMON": "postmaster",
        "staff": "alice, bob@example.com, carol",
        "procmail": '"|/usr/bin/procmail -a x"',
        "list owner": "owner@example.org",
        "@": "@",
    }
    for key, value in cases.items():
        res = postalias(tree, "-q", key, f"lmdb:{src}")
        assert (res.returncode, res.stdout) == (0, value + "\n"), key
    assert postalias(tree, "-q", "nobody", src).returncode == 1


def test_query_from_stdin_and_dump(tree: Path) -> None:
    src = str(tree / "aliases")
    assert postalias(tree, src).returncode == 0
    res = postalias(tree, "-q", "-", src, stdin="root\nnobody\nABUSE\n")
    assert res.returncode == 0
    assert res.stdout == "root:\t\\root, admin@example.org\nABUSE:\tpostmaster\n"
    assert postalias(tree, "-q", "-", src, stdin="nobody\n").returncode == 1
    res = postalias(tree, "-s", src)
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert "@:\t@" in lines and "abuse:\tpostmaster" in lines
    assert len(lines) == 13          # 12 aliases and the "@" signature


def test_malformed_source_is_reported_and_the_old_table_kept(tree: Path) -> None:
    """Every malformed line is reported with file:line; the table is not
    rebuilt without them (a deliberate difference from Postfix, which skips
    them), so the previous database stays in force."""
    src = tree / "bad"
    src.write_text("old: kept\n")
    assert postalias(tree, str(src)).returncode == 0
    shutil.copy(DATA / "malformed.aliases", src)
    res = postalias(tree, str(src))
    assert res.returncode == 65
    lines = res.stderr.splitlines()
    assert lines[0] == f"postalias: warning: {src}, line 2: need name:value pair"
    assert f"postalias: warning: {src}, line 6: name must be local and have no domain" in lines
    assert any(w.startswith(f"postalias: warning: {src}, line 8: duplicate entry") for w in lines)
    assert lines[-1].startswith(f"postalias: fatal: {src}: ") and "not changed" in lines[-1]
    assert "need name:value pair" in (tree / "maillog").read_text()
    assert postalias(tree, "-q", "old", str(src)).stdout == "kept\n"
    assert postalias(tree, "-q", "good", str(src)).returncode == 1


def test_duplicates_alone_only_warn(tree: Path) -> None:
    src = tree / "dups"
    src.write_text("a: one\nA: two\n")
    res = postalias(tree, str(src))
    assert res.returncode == 0 and "duplicate entry" in res.stderr
    assert postalias(tree, "-q", "a", str(src)).stdout == "one\n"


def test_unreadable_source_keeps_old_table(tree: Path) -> None:
    src = tree / "aliases"
    db = tree / "aliases.lmdb"
    assert postalias(tree, str(src)).returncode == 0
    before = db.stat()
    src.unlink()
    res = postalias(tree, str(src))
    assert res.returncode == 66
    assert res.stderr == f"postalias: fatal: open {src}: No such file or directory\n"
    src.mkdir()                                  # root can read any file; a directory it cannot
    assert postalias(tree, str(src)).returncode == 66
    assert db.stat().st_ino == before.st_ino
    assert postalias(tree, "-q", "abuse", str(src)).stdout == "postmaster\n"


def test_permissions_follow_source(tree: Path) -> None:
    src = tree / "aliases"
    for mode, expected in ((0o644, 0o644), (0o640, 0o640), (0o600, 0o600), (0o604, 0o604)):
        src.chmod(mode)
        assert postalias(tree, str(src)).returncode == 0
        assert stat.S_IMODE((tree / "aliases.lmdb").stat().st_mode) == expected
    src.chmod(0o600)
    assert postalias(tree, "-p", str(src)).returncode == 0
    assert stat.S_IMODE((tree / "aliases.lmdb").stat().st_mode) == 0o644


def test_delete(tree: Path) -> None:
    src = str(tree / "aliases")
    assert postalias(tree, src).returncode == 0
    assert postalias(tree, "-d", "ABUSE", src).returncode == 0
    assert postalias(tree, "-q", "abuse", src).returncode == 1
    assert postalias(tree, "-d", "abuse", src).returncode == 1
    assert postalias(tree, "-d", "-", src, stdin="root\nstaff\nnope\n").returncode == 0
    assert postalias(tree, "-q", "staff", src).returncode == 1
    assert postalias(tree, "-q", "postmaster", src).returncode == 0


def test_incremental(tree: Path) -> None:
    src = str(tree / "aliases")
    assert postalias(tree, src).returncode == 0
    res = postalias(tree, "-i", src, stdin="new: x, y\nroot: other\n")
    assert res.returncode == 0
    assert 'duplicate entry: "root"' in res.stderr
    assert postalias(tree, "-q", "new", src).stdout == "x, y\n"
    assert postalias(tree, "-q", "root", src).stdout == "\\root, admin@example.org\n"
    assert postalias(tree, "-q", "abuse", src).stdout == "postmaster\n"
    res = postalias(tree, "-i", "-r", src, stdin="root: other\n")
    assert (res.returncode, res.stderr) == (0, "")
    assert postalias(tree, "-q", "root", src).stdout == "other\n"
    res = postalias(tree, "-i", "-w", src, stdin="root: third\n")
    assert (res.returncode, res.stderr) == (0, "")
    assert postalias(tree, "-q", "root", src).stdout == "other\n"


def test_duplicates_and_case_options(tree: Path) -> None:
    src = tree / "dups"
    src.write_text("Root: first\nroot: second\n")
    res = postalias(tree, str(src))
    assert "duplicate entry" in res.stderr
    assert postalias(tree, "-q", "root", str(src)).stdout == "first\n"
    assert postalias(tree, "-r", str(src)).stderr == ""
    assert postalias(tree, "-q", "root", str(src)).stdout == "second\n"
    assert postalias(tree, "-w", str(src)).stderr == ""
    assert postalias(tree, "-q", "root", str(src)).stdout == "first\n"
    assert postalias(tree, "-f", str(src)).stderr == ""
    assert postalias(tree, "-f", "-q", "Root", str(src)).stdout == "first\n"
    assert postalias(tree, "-f", "-q", "ROOT", str(src)).returncode == 1


@pytest.mark.parametrize("args", [
    [], ["-q"], ["-x", "f"], ["-q", "a", "-s", "f"], ["-d", "a", "-q", "b", "f"],
])
def test_usage_errors(tree: Path, args: list[str]) -> None:
    res = postalias(tree, *args)
    assert res.returncode == 64
    assert res.stderr.startswith("postalias: fatal: ")


def test_unsupported_and_compat_types(tree: Path) -> None:
    src = str(tree / "aliases")
    res = postalias(tree, f"cdb:{src}")
    assert res.returncode == 64 and "unsupported table type" in res.stderr
    res = postalias(tree, f"hash:{src}")
    assert res.returncode == 0 and "built as lmdb" in res.stderr
    assert postalias(tree, "-q", "abuse", f"hash:{src}").stdout == "postmaster\n"


def test_query_missing_table(tree: Path) -> None:
    res = postalias(tree, "-q", "root", str(tree / "none"))
    assert res.returncode == 69 and "none.lmdb" in res.stderr


def test_bad_config(tree: Path) -> None:
    (tree / "main.cf").write_text("this is not a setting\n")
    res = postalias(tree, str(tree / "aliases"))
    assert res.returncode == 78 and "fatal:" in res.stderr


# --- newaliases --------------------------------------------------------------

def test_newaliases_with_mail_config(tree: Path) -> None:
    res = run("newaliases", env={"MAIL_CONFIG": str(tree)})
    assert (res.returncode, res.stderr) == (0, "")
    assert postalias(tree, "-q", "abuse", str(tree / "aliases")).stdout == "postmaster\n"


def test_newaliases_with_option_and_several_tables(tree: Path) -> None:
    shutil.copy(tree / "aliases", tree / "more")
    with open(tree / "main.cf", "a") as fh:
        fh.write(f"alias_database = lmdb:{tree}/aliases, {tree}/more\n")
    assert run("newaliases", "-c", str(tree)).returncode == 0
    assert (tree / "aliases.lmdb").exists() and (tree / "more.lmdb").exists()


def test_newaliases_oa_and_errors(tree: Path) -> None:
    other = tree / "other"
    other.write_text("x: y\n")
    assert run("newaliases", "-c", str(tree), "-oA", str(other)).returncode == 0
    assert (tree / "other.lmdb").exists() and not (tree / "aliases.lmdb").exists()
    res = run("newaliases", "-c", str(tree), "-oA")
    assert res.returncode == 64 and "-oA requires pathname" in res.stderr
    (tree / "aliases").unlink()
    assert run("newaliases", "-c", str(tree)).returncode == 66


def test_newaliases_empty_alias_database(tree: Path) -> None:
    (tree / "main.cf").write_text(f"maillog_file = {tree}/maillog\nalias_database =\n")
    res = run("newaliases", "-c", str(tree))
    assert (res.returncode, res.stderr) == (0, "")
    assert not (tree / "aliases.lmdb").exists()


# --- postmap -----------------------------------------------------------------

def test_postmap_build_query_dump(tree: Path) -> None:
    src = tree / "virtual"
    sample = (DATA / "virtual.map").read_text()
    src.write_text(sample.replace("nokey-value-only\n", ""))    # its one malformed line
    res = postmap(tree, str(src))
    assert (res.returncode, res.stderr) == (0, "")
    assert postmap(tree, "-q", "SALES@example.com", str(src)).stdout == "bob, carol\n"
    assert postmap(tree, "-q", "two words", f"lmdb:{src}").stdout == "quoted key\n"
    assert postmap(tree, "-q", "nobody", str(src)).returncode == 1
    res = postmap(tree, "-q", "-", str(src), stdin="info@example.com\nnone\n")
    assert (res.returncode, res.stdout) == (0, "info@example.com\talice\n")
    res = postmap(tree, "-s", str(src))
    assert "info@example.com\talice" in res.stdout.splitlines()
    assert "@\t@" not in res.stdout.splitlines()


def test_postmap_malformed_line_keeps_the_old_table(tree: Path) -> None:
    src = tree / "map"
    src.write_text("k v\n")
    assert postmap(tree, str(src)).returncode == 0
    src.write_text("k new\nnokey-value-only\n")
    res = postmap(tree, str(src))
    assert res.returncode == 65
    assert (f"postmap: warning: {src}, line 2: expected format: key whitespace value"
            " -- ignoring this line") in res.stderr
    assert postmap(tree, "-q", "k", str(src)).stdout == "v\n"


def test_postmap_other_table_types(tree: Path) -> None:
    res = postmap(tree, "-q", "b", "inline:{a=1, b=2}")
    assert (res.returncode, res.stdout) == (0, "2\n")
    assert postmap(tree, "-q", "c", "inline:{a=1, b=2}").returncode == 1
    assert postmap(tree, "-q", "x", "static:yes").stdout == "yes\n"
    src = tree / "virtual"
    src.write_text("k v\n")
    assert postmap(tree, "-q", "K", f"texthash:{src}").stdout == "v\n"
    assert postmap(tree, "-s", "inline:{b=2, a=1}").stdout == "a\t1\nb\t2\n"
    res = postmap(tree, "inline:{a=1}")
    assert res.returncode == 64 and "unsupported table type for writing: inline" in res.stderr


def test_postmap_delete_and_incremental(tree: Path) -> None:
    src = tree / "access"
    src.write_text("a OK\nb REJECT\n")
    assert postmap(tree, str(src)).returncode == 0
    assert postmap(tree, "-i", str(src), stdin="c DUNNO\n").returncode == 0
    assert postmap(tree, "-d", "a", str(src)).returncode == 0
    assert postmap(tree, "-s", str(src)).stdout == "b\tREJECT\nc\tDUNNO\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run newaliases as an ordinary user")
def test_newaliases_by_an_ordinary_user_says_nothing_about_the_maillog(shared_dir: Path) -> None:
    """The user may rebuild their alias table but not write the root-owned maillog:
    no warning about the log (it goes to syslog), as Postfix's commands do."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    work = shared_dir / "tree"
    work.mkdir()
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    log = work / "maillog"
    log.write_text("")
    os.chmod(log, 0o644)                         # root's, read-only for the user
    (work / "main.cf").write_text(f"maillog_file = {log}\nalias_database = lmdb:{work}/aliases\n")
    shutil.copy(DATA / "basic.aliases", work / "aliases")
    os.chown(work / "aliases", nobody.pw_uid, nobody.pw_gid)
    env = dict(os.environ, MAIL_CONFIG=str(work))
    res = subprocess.run([str(BIN / "newaliases"), "-v"], capture_output=True, text=True, timeout=60,
                         env=env, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    assert res.returncode == 0, res.stderr
    assert "maillog" not in res.stderr and "warning: open" not in res.stderr, res.stderr
    assert (work / "aliases.lmdb").exists()
    assert log.read_text() == ""
