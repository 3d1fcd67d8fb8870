"""Helpers for the local delivery agent's unit tests (this module has no tests).

The unit tests run as any user.  Run as root, they act as the real user
``nobody`` (local never delivers as root), so their files live in a
directory every uid can reach (pytest's tmp_path is private to root).
As anyone else, every fake user is the current user.

Test modules import the fixtures (``base_fixture`` provides ``base``,
``users_fixture`` ``users``, ``maillog_fixture`` ``maillog_path``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.local import privileges
from postpy.local.settings import LocalSettings
from postpy.tables import lmdb_table
from postpy.tables.aliases_parser import parse_aliases
from postpy.tables.maps import clear_cache
from postpy.util import maillog
from postpy.util.privs import Identity

IS_ROOT = os.geteuid() == 0


def acting_uid() -> tuple[int, int]:
    """The uid/gid deliveries in these tests run as."""
    if IS_ROOT:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    return os.getuid(), os.getgid()


class FakeUsers:
    """A passwd stand-in: the test's users, then the real ``nobody``."""

    def __init__(self) -> None:
        self.users: dict[str, Identity] = {}

    def __call__(self, name: str) -> Identity | None:
        if name in self.users:
            return self.users[name]
        if name == "nobody":
            return privileges.lookup_user(name)
        return None

    def add(self, base: Path, name: str) -> Identity:
        uid, gid = acting_uid()
        home = base / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        if IS_ROOT:
            os.chown(home, uid, gid)
        who = Identity(name, uid, gid, str(home), "/bin/sh")
        self.users[name] = who
        return who


@pytest.fixture(name="base")
def base_fixture() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-local-"))
    os.chmod(path, 0o755)
    (path / "etc").mkdir()
    (path / "shared").mkdir()
    os.chmod(path / "shared", 0o1777)
    clear_cache()
    yield path
    clear_cache()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="users")
def users_fixture(base: Path) -> FakeUsers:
    fake = FakeUsers()
    fake.add(base, "alice")
    fake.add(base, "bob")
    return fake


@pytest.fixture(name="maillog_path")
def maillog_fixture(base: Path) -> Iterator[Path]:
    path = base / "maillog"
    maillog.setup("local", maillog_file=str(path), hostname="mx")
    yield path
    maillog.setup("local", maillog_file="/dev/null", hostname="mx")


def build_aliases(base: Path, text: str, name: str = "aliases") -> str:
    """Write and index an aliases file; the alias_maps spec for it."""
    path = base / "etc" / name
    path.write_text(text)
    parsed = parse_aliases(text, str(path))
    assert not parsed.warnings, parsed.warnings
    lmdb_table.build(f"{path}.lmdb", [(e.name, e.value) for e in parsed.entries])
    return f"lmdb:{path}"


def make_settings(base: Path, users: FakeUsers, **params: str) -> LocalSettings:
    explicit = {
        "myhostname": "mx.test.example",
        "mydestination": "$myhostname, localhost, test.example",
        "alias_maps": "",
        "mail_spool_directory": str(base / "mail"),
        "deliver_lock_attempts": "2",
        "deliver_lock_delay": "0.01",
    }
    explicit.update(params)
    settings = LocalSettings.from_config(Config(str(base / "etc"), explicit=explicit))
    settings.users = users
    return settings


def chown_to_actor(path: Path) -> None:
    """Give a file the test created to the acting user (as root)."""
    if IS_ROOT:
        uid, gid = acting_uid()
        os.chown(path, uid, gid)
