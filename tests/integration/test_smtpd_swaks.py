"""smtpd against swaks, a widely used SMTP test client, in a started system.

swaks comes from Debian (scripts/test-deps installs it when run as root).
Without it these tests are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from test_smtpd_system import MASTER_CF, PARAMS, body_of, certificate, queue_id_of, wait_queued

SWAKS = shutil.which("swaks")

pytestmark = pytest.mark.skipif(
    SWAKS is None,
    reason=("swaks is not installed: run scripts/test-deps as root to install it"
            if os.geteuid() == 0 else
            "swaks is not installed and installing it needs root (scripts/test-deps)"))

__all__ = ["certificate"]   # a module-scoped fixture this file uses


def swaks(port: int, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(port),
                           "--helo", "swaks.example", *args],
                          capture_output=True, text=True, timeout=30, input=input)


@pytest.fixture
def system(mta_factory: Any) -> Any:
    return mta_factory(master_cf=MASTER_CF, **PARAMS)


def test_swaks_plain(system: Any) -> None:
    done = swaks(system.port, "--from", "sender@example.org", "--to", "alice@test.example",
                 "--header", "Subject: from swaks", "--body", "line one\n.dotted\nline three")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<-  250-PIPELINING" in done.stdout and "<-  250 CHUNKING" in done.stdout
    queue_id = queue_id_of(done.stdout)
    env, content = wait_queued(system, 1)[queue_id]
    assert env.sender == "sender@example.org"
    assert [r.address for r in env.recipients] == ["alice@test.example"]
    assert b"Subject: from swaks\n" in content
    assert b"\n\nline one\n.dotted\nline three\n" in content


def test_swaks_pipelining_multiple_recipients(system: Any) -> None:
    done = swaks(system.port, "--pipeline", "--from", "s@example.org",
                 "--to", "alice@test.example,bob@test.example,carol@test.example")
    assert done.returncode == 0, done.stdout + done.stderr
    env, _ = wait_queued(system, 1)[queue_id_of(done.stdout)]
    assert [r.address for r in env.recipients] == [
        "alice@test.example", "bob@test.example", "carol@test.example"]


def test_swaks_relay_refused_from_outside(system: Any) -> None:
    done = swaks(system.port, "--local-interface", "127.0.0.2", "--from", "spam@example.net",
                 "--to", "victim@elsewhere.example")
    assert done.returncode != 0
    assert "<** 554 5.7.1 <victim@elsewhere.example>: Relay access denied" in done.stdout
    assert system.queue_ids("incoming") == []


def test_swaks_unknown_user(system: Any) -> None:
    done = swaks(system.port, "--from", "s@example.org", "--to", "nobody@test.example")
    assert done.returncode != 0
    assert ("<** 550 5.1.1 <nobody@test.example>: Recipient address rejected: User unknown in "
            "local recipient table") in done.stdout


def test_swaks_vrfy_and_quit_after(system: Any) -> None:
    done = swaks(system.port, "--quit-after", "EHLO", "--from", "s@example.org",
                 "--to", "alice@test.example")
    assert done.returncode == 0, done.stdout
    assert "<-  221 2.0.0 Bye" in done.stdout


def test_swaks_starttls(mta_factory: Any, certificate: tuple[str, str]) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_tls_cert_file=certificate[0],
                      smtpd_tls_key_file=certificate[1])
    done = swaks(mta.port, "--tls", "--from", "s@example.org", "--to", "bob@test.example",
                 "--body", "secret")
    if "TLS not available" in done.stdout + done.stderr and done.returncode != 0:
        pytest.skip("this swaks has no TLS support (install libnet-ssleay-perl)")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  250 2.0.0 Ok: queued as" in done.stdout
    env, content = wait_queued(mta, 1)[queue_id_of(done.stdout)]
    assert env.attrs.get("protocol") == "ESMTPS"
    assert body_of(content).startswith(b"secret\n")
    assert b"(using TLSv1." in content        # cleanup's Received: header saw the TLS
