"""The password hash file: hashing, parsing, permissions, updates, the backend."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from postpy.sasl import passwdfile
from postpy.sasl.backend import ClientInfo
from postpy.sasl.passwdfile import PasswdFileBackend, PasswdFileError


def test_hash_and_verify() -> None:
    encoded = passwdfile.hash_password("secret", ln=4)
    assert encoded.startswith("$scrypt$ln=4,r=8,p=1$")
    stored = passwdfile.parse_hash(encoded)
    assert passwdfile.verify_password("secret", stored)
    assert not passwdfile.verify_password("Secret", stored)
    assert not passwdfile.verify_password("", stored)
    assert not passwdfile.verify_password("secret", None)


def test_salts_differ() -> None:
    assert passwdfile.hash_password("pw", ln=4) != passwdfile.hash_password("pw", ln=4)


def test_default_parameters() -> None:
    stored = passwdfile.parse_hash(passwdfile.hash_password("pw"))
    assert (stored.ln, stored.r, stored.p, len(stored.salt), len(stored.digest)) == (14, 8, 1, 16, 32)


def test_non_ascii_password() -> None:
    stored = passwdfile.parse_hash(passwdfile.hash_password("pässwörd €", ln=4))
    assert passwdfile.verify_password("pässwörd €", stored)


@pytest.mark.parametrize("encoded", [
    "",
    "secret",
    "{PLAIN}secret",
    "$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ",                     # no hash part
    "$scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,    # ln too large
    "$scrypt$ln=20,r=32,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,   # too much memory
    "$scrypt$ln=0,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,
    "$scrypt$ln=14,r=8,p=1$c2Fs$" + "A" * 43,                # salt too short
    "$scrypt$ln=14,r=8,p=1$c2FsdHNhbHRzYWx0$AAAA",           # hash too short
    "$scrypt$ln=14,r=8,p=1$c2FsdH*hbHRzYWx0$" + "A" * 43,    # not base64
    "$bcrypt$ln=14,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,
])
def test_parse_hash_rejects(encoded: str) -> None:
    with pytest.raises(ValueError):
        passwdfile.parse_hash(encoded)


@pytest.mark.parametrize("name, problem", [
    ("alice", None),
    ("alice@example.org", None),
    ("jörg", None),
    ("", "empty"),
    ("a:b", "':'"),
    ("a b", "white space"),
    ("a\tb", "white space"),
    ("a\x7fb", "control"),
    ("x" * 256, "longer"),
])
def test_username_problem(name: str, problem: str | None) -> None:
    found = passwdfile.username_problem(name)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_parse_text_skips_bad_lines() -> None:
    good = passwdfile.hash_password("pw", ln=4)
    text = (f"# comment\n\nalice:{good}\n"
            "no colon here\n"
            f"bad name:{good}\n"
            "bob:{PLAIN}pw\n"
            f"alice:{passwdfile.hash_password('other', ln=4)}\n"
            f"carol:{good}\r\n")
    parsed = passwdfile.parse_text(text, "f")
    assert list(parsed.entries) == ["alice", "carol"]
    assert parsed.entries["alice"] == good
    assert len(parsed.warnings) == 4
    assert any("line 4" in w and "need user:hash" in w for w in parsed.warnings)
    assert any("duplicate user alice" in w for w in parsed.warnings)


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    os.chmod(path, mode)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o601])
def test_read_file_refuses_other_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "sasl_passwd"
    _write(path, "", mode)
    with pytest.raises(PasswdFileError, match="refusing"):
        passwdfile.read_file(str(path))


def test_read_file_missing(tmp_path: Path) -> None:
    with pytest.raises(PasswdFileError, match="does not exist"):
        passwdfile.read_file(str(tmp_path / "nope"))


def test_update_file_creates_and_edits(tmp_path: Path) -> None:
    path = str(tmp_path / "sasl_passwd")
    encoded = passwdfile.hash_password("pw", ln=4)
    passwdfile.update_file(path, lambda e: e.__setitem__("alice", encoded))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    passwdfile.update_file(path, lambda e: e.__setitem__("bob", encoded))
    assert list(passwdfile.read_file(path).entries) == ["alice", "bob"]
    passwdfile.update_file(path, lambda e: e.pop("alice"))
    assert list(passwdfile.read_file(path).entries) == ["bob"]
    assert [n for n in os.listdir(tmp_path) if n != "sasl_passwd"] == []   # no temp file left


def test_update_file_keeps_mode_and_new_group(tmp_path: Path) -> None:
    path = str(tmp_path / "sasl_passwd")
    passwdfile.update_file(path, lambda e: None, new_gid=os.getegid())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    os.chmod(path, 0o600)
    passwdfile.update_file(path, lambda e: None, new_gid=os.getegid())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def _backend(path: Path) -> tuple[PasswdFileBackend, list[str]]:
    warnings: list[str] = []
    return PasswdFileBackend(str(path), log_warning=warnings.append), warnings


def _auth(backend: PasswdFileBackend, user: str, pw: str):  # type: ignore[no-untyped-def]
    return asyncio.run(backend.authenticate(user, pw, ClientInfo(addr="192.0.2.1")))


def test_backend_checks_and_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "sasl_passwd"
    _write(path, f"alice:{passwdfile.hash_password('secret', ln=4)}\n")
    backend, warnings = _backend(path)
    ok = _auth(backend, "alice", "secret")
    assert ok.ok and ok.username == "alice" and not ok.temporary_failure
    bad = _auth(backend, "alice", "wrong")
    assert not bad.ok and not bad.temporary_failure
    assert not _auth(backend, "Alice", "secret").ok
    assert not _auth(backend, "mallory", "secret").ok
    # a new password takes effect without a restart
    passwdfile.update_file(str(path), lambda e: e.__setitem__(
        "alice", passwdfile.hash_password("new", ln=4)))
    assert _auth(backend, "alice", "new").ok
    assert not _auth(backend, "alice", "secret").ok
    assert warnings == []


def test_backend_refuses_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "sasl_passwd"
    _write(path, f"alice:{passwdfile.hash_password('secret', ln=4)}\n")
    backend, warnings = _backend(path)
    assert _auth(backend, "alice", "secret").ok
    os.chmod(path, 0o644)
    result = _auth(backend, "alice", "secret")
    assert not result.ok and result.temporary_failure
    assert any("refusing" in w for w in warnings)
    os.chmod(path, 0o640)
    assert _auth(backend, "alice", "secret").ok


def test_backend_missing_file_is_temporary(tmp_path: Path) -> None:
    backend, warnings = _backend(tmp_path / "none")
    result = _auth(backend, "alice", "secret")
    assert result.temporary_failure and "does not exist" in result.text
    assert warnings and "secret" not in " ".join(warnings)


def test_backend_keeps_last_good_copy_when_file_vanishes(tmp_path: Path) -> None:
    path = tmp_path / "sasl_passwd"
    _write(path, f"alice:{passwdfile.hash_password('secret', ln=4)}\n")
    backend, warnings = _backend(path)
    path.unlink()
    assert _auth(backend, "alice", "secret").ok
    assert any("keeping the users read before" in w for w in warnings)
