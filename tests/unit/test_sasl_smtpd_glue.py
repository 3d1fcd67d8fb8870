"""Where SMTP AUTH meets smtpd: the AUTH= MAIL parameter, the restrictions
that look at the login, and the certificate watcher."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from postpy.sasl.senderlogin import SenderLogin
from postpy.smtpd import tls
from postpy.smtpd.commands import CommandError, mail_params
from postpy.smtpd.relay import Recipient, RelayPolicy
from postpy.tables import maps


@pytest.mark.parametrize("value", ["<>", "alice@example.org", "a+2Bb@example.org"])
def test_auth_parameter_accepted_when_enabled(value: str) -> None:
    mail_params({"AUTH": value}, auth_enable=True)


@pytest.mark.parametrize("params, text", [
    ({"AUTH": "<>"}, "555 5.5.4 Unsupported option: AUTH"),      # AUTH not enabled
])
def test_auth_parameter_refused_when_disabled(params: dict[str, str | None], text: str) -> None:
    with pytest.raises(CommandError) as info:
        mail_params(params)
    assert str(info.value.reply) == text


@pytest.mark.parametrize("value", [None, "", "a=b", "a b", "caf\u00e9"])
def test_auth_parameter_bad_syntax(value: str | None) -> None:
    with pytest.raises(CommandError) as info:
        mail_params({"AUTH": value}, auth_enable=True)
    assert str(info.value.reply) == "501 5.5.4 Bad AUTH parameter syntax"


@pytest.fixture
def policy(tmp_path: Path) -> RelayPolicy:
    table = tmp_path / "owners"
    table.write_text("alice@test.example alice\n")
    maps.clear_cache()
    return RelayPolicy(
        mydestination=frozenset({"test.example"}), relay_domains=(),
        relay_restrictions=["permit_sasl_authenticated", "reject_unauth_destination"],
        recipient_restrictions=[], local_recipient_maps=[],
        sender_restrictions=["reject_sender_login_mismatch"],
        sender_login=SenderLogin(maps=[f"texthash:{table}"]))


def rcpt(address: str, sender: str, user: str) -> Recipient:
    return Recipient(written=address, address=address, client_addr="192.0.2.1",
                     sender=sender, sasl_username=user)


@pytest.mark.parametrize("address, sender, user, code", [
    ("x@foreign.example", "alice@test.example", "alice", None),     # authenticated relay
    ("x@foreign.example", "other@foreign.example", "", 554),        # unauthenticated relay
    ("x@foreign.example", "alice@test.example", "bob", 553),        # not bob's address
    ("x@foreign.example", "alice@test.example", "", 553),           # owned: log in first
    ("bob@test.example", "other@foreign.example", "", None),        # local mail, no login
])
def test_restrictions_see_the_login(policy: RelayPolicy, address: str, sender: str, user: str,
                                    code: int | None) -> None:
    verdict = policy.check(rcpt(address, sender, user))
    assert (verdict.code if verdict is not None else None) == code


def test_mismatch_without_maps_warns() -> None:
    policy = RelayPolicy(frozenset(), (), ["reject_unauth_destination"], [], [],
                         sender_restrictions=["reject_sender_login_mismatch"])
    assert any("smtpd_sender_login_maps" in w for w in policy.check_config())


def make_cert(directory: Path, name: str) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def test_certificate_watcher(tmp_path: Path) -> None:
    old, new = make_cert(tmp_path, "old"), make_cert(tmp_path, "new")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(old[0], cert)
    shutil.copy(old[1], key)
    warnings: list[str] = []
    watcher = tls.CertificateWatcher(str(cert), str(key), ">=TLSv1.2", warnings.append)
    first = watcher.current()
    assert watcher.current() is first                  # nothing changed: same context
    shutil.copy(new[0], f"{cert}.tmp")
    os.rename(f"{cert}.tmp", cert)                     # certificate renewed, key not yet
    assert watcher.current() is first                  # they do not match: keep the old one
    assert len(warnings) == 1 and "still using" in warnings[0]
    assert watcher.current() is first and len(warnings) == 1   # warned once
    shutil.copy(new[1], f"{key}.tmp")
    os.rename(f"{key}.tmp", key)
    second = watcher.current()
    assert second is not first
    assert watcher.current() is second
    assert second.minimum_version >= tls.FLOOR
