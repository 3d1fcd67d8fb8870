"""No password, and no base64 that carries one, ever reaches a log.

Runs successful and failed PLAIN and LOGIN exchanges (initial response and
challenge forms), an authzid, a cancelled exchange and swaks, then scans the
whole maillog (and Dovecot's log) for every password and each encoding that
could carry it.
"""

from __future__ import annotations

import shutil
import subprocess

from submission_setup import USERS, Submission, b64, certificate, plain_blob, submission

__all__ = ["certificate", "submission"]

WRONG = "Wr0ng-guess-xyzzy-pw"
EURO = "\u20acuro-Secret-42"      # its base64 starts with a digit: "4oKs..."


def forms(password: str, users: list[str]) -> list[str]:
    """The password and every base64 form a client may send it in."""
    found = {password, b64(password), b64(password).rstrip("=")}
    for user in users:
        for authzid in ("", user):
            blob = plain_blob(user, password, authzid)
            found |= {blob, blob.rstrip("=")}
    return sorted(found)


def test_no_password_in_any_log(submission: Submission) -> None:
    alice, bob = USERS["alice"], USERS["bob"]
    with submission.smtp() as s:
        assert s.docmd("AUTH", "PLAIN " + plain_blob("alice", WRONG))[0] == 535
        assert s.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
        assert s.docmd(b64("bob"))[0] == 334
        assert s.docmd(b64("*"))[0] == 535                    # a wrong LOGIN password
        assert s.docmd("AUTH", "PLAIN")[0] == 334
        assert s.docmd(plain_blob("alice", alice, "alice"))[0] == 235
        assert s.sendmail("alice@test.example", ["x@foreign.example"], b"Subject: a\r\n\r\nx\r\n") == {}
    with submission.smtp() as s:
        assert s.docmd("AUTH", "LOGIN " + b64("bob"))[0] == 334
        assert s.docmd(b64(bob))[0] == 235
    with submission.smtp() as s:
        assert s.docmd("AUTH", "LOGIN")[0] == 334
        assert s.docmd("*")[0] == 501
        s.login("alice", alice)
    with submission.smtp() as s:
        # a client that goes on after its exchange failed: the password arrives
        # as a command line (a non-SMTP command, logged without its text)
        assert s.docmd("AUTH", "LOGIN")[0] == 334
        assert s.docmd("!bad!")[0] == 501
        assert s.docmd(b64(EURO))[0] == 421
    swaks = shutil.which("swaks")
    if swaks is not None:
        subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(submission.submission_port),
                        "--tls", "--auth", "LOGIN", "--auth-user", "bob", "--auth-password", bob,
                        "--from", "bob@test.example", "--to", "y@foreign.example"],
                       capture_output=True, timeout=60)
    submission.wait_queued(1)
    submission.mta.wait_log(r"sasl_method=LOGIN, sasl_username=bob|sasl_username=alice")
    log = submission.all_logs()
    assert "SASL PLAIN authentication failed" in log
    assert "non-SMTP command from localhost[127.0.0.1]: (base64 data withheld)" in log
    for password in (alice, bob, WRONG, EURO):
        for form in forms(password, ["alice", "bob"]):
            assert form not in log, f"a form of a password is in the log: {form}"
