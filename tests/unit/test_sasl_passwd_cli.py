"""``postpy passwd add|delete|list`` on a real configuration directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from postpy.sasl import passwdfile
from postpy.util.sysexits import EX_CONFIG, EX_NOUSER, EX_USAGE

POSTPY = str(Path(sys.executable).parent / "postpy")


def postpy(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    return subprocess.run([POSTPY, "-c", str(config), "passwd", *args], input=stdin,
                          capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/spool\n")
    return tmp_path


def test_add_list_change_delete(config: Path) -> None:
    path = config / "sasl_passwd"
    added = postpy(config, "add", "alice", stdin="correct horse\n")
    assert added.returncode == 0, added.stderr
    assert "added user alice" in added.stderr
    assert postpy(config, "add", "bob@example.org", stdin="pw2\n").returncode == 0
    assert postpy(config, "list").stdout == "alice\nbob@example.org\n"
    entries = passwdfile.read_file(str(path)).entries
    assert passwdfile.verify_password("correct horse", passwdfile.parse_hash(entries["alice"]))
    assert "correct horse" not in path.read_text()
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o007 == 0 and mode in (0o600, 0o640)

    changed = postpy(config, "add", "alice", stdin="new one\r\n")
    assert changed.returncode == 0 and "changed the password of user alice" in changed.stderr
    entries = passwdfile.read_file(str(path)).entries
    assert passwdfile.verify_password("new one", passwdfile.parse_hash(entries["alice"]))

    assert postpy(config, "delete", "alice").returncode == 0
    assert postpy(config, "list").stdout == "bob@example.org\n"
    gone = postpy(config, "delete", "alice")
    assert gone.returncode == EX_NOUSER and "no such user" in gone.stderr


def test_main_cf_chooses_the_file(config: Path) -> None:
    other = config / "other" / "users"
    other.parent.mkdir()
    (config / "main.cf").write_text(f"smtpd_sasl_password_file = {other}\n")
    assert postpy(config, "add", "carol", stdin="pw\n").returncode == 0
    assert other.exists() and not (config / "sasl_passwd").exists()


@pytest.mark.parametrize("user, stdin", [
    ("alice", ""),             # no password
    ("alice", "\n"),           # empty password
    ("a:b", "pw\n"),
    ("a b", "pw\n"),
])
def test_add_refuses(config: Path, user: str, stdin: str) -> None:
    result = postpy(config, "add", user, stdin=stdin)
    assert result.returncode == EX_USAGE, result.stderr
    assert not (config / "sasl_passwd").exists()


def test_password_is_never_an_argument(config: Path) -> None:
    result = postpy(config, "add", "alice", "secret")
    assert result.returncode != 0
    assert not (config / "sasl_passwd").exists()


def test_world_readable_file_is_refused(config: Path) -> None:
    assert postpy(config, "add", "alice", stdin="pw\n").returncode == 0
    os.chmod(config / "sasl_passwd", 0o644)
    listed = postpy(config, "list")
    assert listed.returncode == EX_CONFIG and "refusing" in listed.stderr


def test_list_without_file_is_empty(config: Path) -> None:
    result = postpy(config, "list")
    assert result.returncode == 0 and result.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a file for mail_owner")
def test_root_creates_file_for_mail_owner_group(config: Path) -> None:
    import pwd

    try:
        owner = pwd.getpwnam("postpy")
    except KeyError:
        pytest.skip("no postpy user")
    assert postpy(config, "add", "alice", stdin="pw\n").returncode == 0
    st = (config / "sasl_passwd").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, owner.pw_gid)
