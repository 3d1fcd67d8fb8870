"""postmap -q with regexp:, pcre: and cidr: tables, run as the real command
from .venv/bin (and compared with Debian's Postfix postmap when it is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not (BIN / "postmap").exists(),
                                reason="console scripts not installed (pip install -e .)")

REGEXP = """\
# header checks
/^Subject:.*make money/      REJECT no spam here
/^(.*)-outgoing@(.*)$/       550 Use ${1}@${2} instead
if !/^owner-/
/^list@/                     OK
endif
"""
PCRE = "/^X-(\\w+):\\s+(\\d+)$/  DUNNO $1=$2\n!/\\@/ no at sign\n"
CIDR = "192.168.1.1 OK\n192.168.0.0/16 REJECT\n2001:db8::/32 six\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(f"maillog_file = {tmp_path}/maillog\n")
    (tmp_path / "checks.regexp").write_text(REGEXP)
    (tmp_path / "checks.pcre").write_text(PCRE)
    (tmp_path / "clients.cidr").write_text(CIDR)
    return tmp_path


def postmap(tree: Path, *args: str, stdin: str = "", program: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    return subprocess.run([program or str(BIN / "postmap"), "-c", str(tree), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


QUERIES = [
    ("regexp", "checks.regexp", "Subject: Make Money fast", "REJECT no spam here"),
    ("regexp", "checks.regexp", "news-outgoing@example.org", "550 Use news@example.org instead"),
    ("regexp", "checks.regexp", "list@example.org", "OK"),
    ("regexp", "checks.regexp", "owner-list@example.org", None),
    ("pcre", "checks.pcre", "X-Score: 42", "DUNNO Score=42"),
    ("pcre", "checks.pcre", "no-at", "no at sign"),
    ("pcre", "checks.pcre", "a@b", None),
    ("cidr", "clients.cidr", "192.168.1.1", "OK"),
    ("cidr", "clients.cidr", "192.168.200.1", "REJECT"),
    ("cidr", "clients.cidr", "2001:db8:0::7", "six"),
    ("cidr", "clients.cidr", "10.0.0.1", None),
]


@pytest.mark.parametrize(("kind", "name", "key", "expected"), QUERIES)
def test_query(tree: Path, kind: str, name: str, key: str, expected: str | None) -> None:
    res = postmap(tree, "-q", key, f"{kind}:{tree / name}")
    assert res.stderr == ""
    assert (res.returncode, res.stdout) == ((0, expected + "\n") if expected else (1, ""))


def test_query_from_stdin_and_several_tables(tree: Path) -> None:
    res = postmap(tree, "-q", "-", f"cidr:{tree / 'clients.cidr'}", f"pcre:{tree / 'checks.pcre'}",
                  stdin="192.168.1.1\nnot-an-address\na@b\n")
    assert (res.returncode, res.stdout) == (0, "192.168.1.1\tOK\nnot-an-address\tno at sign\n")


def test_malformed_table_is_a_clear_fatal_error(tree: Path) -> None:
    (tree / "bad.regexp").write_text("/a/ ok\n/b/Z bad\n")
    res = postmap(tree, "-q", "a", f"regexp:{tree / 'bad.regexp'}")
    assert res.returncode == 69
    assert res.stderr == (f"postmap: fatal: regexp map {tree / 'bad.regexp'}, line 2: "
                          "unknown regexp option \"Z\"\n")
    assert "line 2: unknown regexp option" in (tree / "maillog").read_text()


def test_listing_and_building_are_refused(tree: Path) -> None:
    res = postmap(tree, "-s", f"regexp:{tree / 'checks.regexp'}")
    assert res.returncode == 69
    assert "table does not support listing its entries" in res.stderr
    res = postmap(tree, f"cidr:{tree / 'clients.cidr'}")
    assert res.returncode == 64
    assert "unsupported table type for writing: cidr" in res.stderr
    assert not list(tree.glob("*.lmdb"))


@pytest.mark.skipif(shutil.which("postmap", path="/usr/sbin") is None,
                    reason="Postfix's postmap is not installed")
@pytest.mark.parametrize(("kind", "name", "key", "expected"),
                         [q for q in QUERIES if q[0] != "pcre"])    # Debian's pcre: is a package apart
def test_same_answers_as_postfix(tmp_path: Path, tree: Path, kind: str, name: str, key: str,
                                 expected: str | None) -> None:
    postfix_conf = tmp_path / "postfix"
    postfix_conf.mkdir()
    (postfix_conf / "main.cf").write_text("compatibility_level = 3.6\n")
    res = postmap(postfix_conf, "-q", key, f"{kind}:{tree / name}", program="/usr/sbin/postmap")
    assert (res.returncode, res.stdout) == ((0, expected + "\n") if expected else (1, ""))
