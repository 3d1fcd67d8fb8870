"""Mail submission with SMTP AUTH, driven by swaks (``--auth``, ``--tls``, ``--tlsc``).

Each test runs with the password file and with a real Dovecot.  swaks comes
from Debian (scripts/test-deps installs it when run as root).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from submission_setup import USERS, Submission, certificate, submission

__all__ = ["certificate", "submission"]

SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed "
                                "(run scripts/test-deps as root)")


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run swaks; under TLS it prints replies as "<~  250" and errors as "<~* 535"."""
    assert SWAKS is not None
    return subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(port),
                           "--helo", "swaks.example", "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=60)


def auth(user: str, mechanism: str = "PLAIN", password: str | None = None) -> list[str]:
    return ["--auth", mechanism, "--auth-user", user,
            "--auth-password", USERS[user] if password is None else password]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth_relay(submission: Submission, mechanism: str) -> None:
    done = swaks(submission.submission_port, "--tls", *auth("alice", mechanism),
                 "--from", "alice@test.example", "--to", "friend@foreign.example")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  235 2.7.0 Authentication successful" in done.stdout
    ((_, (env, content)),) = submission.wait_queued(1).items()
    assert env.attrs.get("sasl_method") == mechanism
    assert b"with ESMTPSA" in content


def test_swaks_implicit_tls(submission: Submission) -> None:
    done = swaks(submission.smtps_port, "--tlsc", *auth("bob"),
                 "--from", "bob@test.example", "--to", "friend@foreign.example")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  235 2.7.0 Authentication successful" in done.stdout
    assert len(submission.wait_queued(1)) == 1


def test_swaks_wrong_password(submission: Submission) -> None:
    done = swaks(submission.submission_port, "--tls", *auth("alice", password="not-it"),
                 "--from", "alice@test.example", "--to", "friend@foreign.example")
    assert done.returncode != 0
    assert "* 535 5.7.8 Error: authentication failed" in done.stdout
    assert submission.mta.queue_ids("incoming") == []


def test_swaks_auth_without_tls_refused(submission: Submission) -> None:
    done = swaks(submission.submission_port, *auth("alice"),
                 "--from", "alice@test.example", "--to", "friend@foreign.example")
    assert done.returncode != 0
    assert "250-AUTH" not in done.stdout and "250 AUTH" not in done.stdout
    assert "235 " not in done.stdout


def test_swaks_unauthenticated_relay_refused(submission: Submission) -> None:
    done = swaks(submission.submission_port, "--tls",
                 "--from", "someone@foreign.example", "--to", "friend@foreign.example")
    assert done.returncode != 0
    assert "* 554 5.7.1 <friend@foreign.example>: Recipient address rejected: Access denied" \
        in done.stdout
    # an address some login owns cannot be used without logging in
    done = swaks(submission.submission_port, "--tls",
                 "--from", "alice@test.example", "--to", "friend@foreign.example")
    assert done.returncode != 0
    assert "* 553 5.7.1 <alice@test.example>: Sender address rejected: not logged in" \
        in done.stdout


def test_swaks_sender_login_mismatch(submission: Submission) -> None:
    done = swaks(submission.submission_port, "--tls", *auth("bob"),
                 "--from", "alice@test.example", "--to", "friend@foreign.example")
    assert done.returncode != 0
    assert ("* 553 5.7.1 <alice@test.example>: Sender address rejected: "
            "not owned by user bob") in done.stdout
