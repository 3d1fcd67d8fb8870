"""smtpd_sender_login_maps and the *_sender_login_mismatch restrictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.config.maincf import load_config
from postpy.sasl.senderlogin import AUTHENTICATED, BOTH, UNAUTHENTICATED, SenderLogin
from postpy.tables import maps


@pytest.fixture
def login(tmp_path: Path) -> SenderLogin:
    table = tmp_path / "senders"
    table.write_text("alice@example.org  alice\n"
                     "sales@example.org  alice, Bob\n"
                     "@corp.example      admin\n"
                     "root               admin\n")
    maps.clear_cache()
    return SenderLogin(maps=[f"texthash:{table}"],
                       local_domains=frozenset({"example.org"}), recipient_delimiter="+")


@pytest.mark.parametrize("sender, keys", [
    ("alice@example.org", ["alice@example.org", "alice", "@example.org"]),
    ("alice+tag@example.org", ["alice+tag@example.org", "alice@example.org", "alice+tag", "alice",
                               "@example.org"]),
    ("x@other.example", ["x@other.example", "@other.example"]),
    ("root", ["root"]),
])
def test_keys(login: SenderLogin, sender: str, keys: list[str]) -> None:
    assert login.keys(sender) == keys


@pytest.mark.parametrize("sender, owners", [
    ("alice@example.org", ["alice"]),
    ("ALICE+news@Example.org", ["alice"]),
    ("sales@example.org", ["alice", "Bob"]),
    ("anyone@corp.example", ["admin"]),
    ("root@example.org", ["admin"]),
    ("root@other.example", None),
    ("nobody@example.org", None),
    ("", None),
])
def test_owners(login: SenderLogin, sender: str, owners: list[str] | None) -> None:
    assert login.owners(sender) == owners


@pytest.mark.parametrize("restriction, sender, user, code, text", [
    (BOTH, "alice@example.org", "alice", None, ""),
    (BOTH, "alice@example.org", "ALICE", None, ""),
    (BOTH, "sales@example.org", "bob", None, ""),
    (BOTH, "alice@example.org", "bob", 553,
     "5.7.1 <alice@example.org>: Sender address rejected: not owned by user bob"),
    (BOTH, "stranger@elsewhere.example", "bob", 553, "not owned by user bob"),
    (BOTH, "", "bob", 553, "not owned by user bob"),
    (BOTH, "alice@example.org", "", 553,
     "5.7.1 <alice@example.org>: Sender address rejected: not logged in"),
    (BOTH, "stranger@elsewhere.example", "", None, ""),
    (BOTH, "", "", None, ""),
    (AUTHENTICATED, "alice@example.org", "", None, ""),
    (AUTHENTICATED, "alice@example.org", "bob", 553, "not owned"),
    (UNAUTHENTICATED, "alice@example.org", "bob", None, ""),
    (UNAUTHENTICATED, "alice@example.org", "", 553, "not logged in"),
])
def test_check(login: SenderLogin, restriction: str, sender: str, user: str,
               code: int | None, text: str) -> None:
    refusal = login.check(restriction, sender, user)
    if code is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.code == code and text in refusal.text


def test_table_failure_is_temporary(tmp_path: Path) -> None:
    maps.clear_cache()
    login = SenderLogin(maps=[f"lmdb:{tmp_path}/missing"])
    refusal = login.check(BOTH, "alice@example.org", "alice")
    assert refusal is not None and refusal.code == 451


def test_from_config(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("myhostname = mx.example.org\nmydestination = example.org\n"
                                      "smtpd_sender_login_maps = texthash:/x\n"
                                      "recipient_delimiter = +\n")
    login = SenderLogin.from_config(load_config(str(tmp_path)))
    assert login.maps == ["texthash:/x"]
    assert login.local_domains == {"mx.example.org", "example.org"}
    assert login.recipient_delimiter == "+"
