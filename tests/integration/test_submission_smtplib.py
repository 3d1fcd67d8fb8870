"""Mail submission (RFC 6409) with SMTP AUTH, driven by Python's smtplib.

Every test runs twice: with users from the password file (``postpy passwd``)
and with a real Dovecot answering over its auth socket.  See
submission_setup.py for the services in master.cf.
"""

from __future__ import annotations

import smtplib
import socket
import time

import pytest
from submission_setup import USERS, Submission, b64, certificate, plain_blob, submission

__all__ = ["certificate", "submission"]     # fixtures this file uses

MESSAGE = b"From: Alice <alice@test.example>\r\nTo: x@foreign.example\r\nSubject: hi\r\n\r\nbody\r\n"


def test_authenticated_relay_to_foreign_domain(submission: Submission) -> None:
    with submission.smtp() as s:
        assert "AUTH PLAIN LOGIN" in (s.ehlo_resp or b"").decode()
        assert s.login("alice", USERS["alice"]) == (235, b"2.7.0 Authentication successful")
        refused = s.sendmail("alice@test.example", ["someone@foreign.example"], MESSAGE)
        assert refused == {}
    ((queue_id, (env, content)),) = submission.wait_queued(1).items()
    assert env.sender == "alice@test.example"
    assert [r.address for r in env.recipients] == ["someone@foreign.example"]
    assert env.attrs.get("sasl_username") == "alice"
    assert env.attrs.get("sasl_method") == "PLAIN"
    assert env.attrs.get("protocol") == "ESMTPSA"
    headers = content.split(b"\n\n", 1)[0].decode()
    assert "with ESMTPSA id " + queue_id in headers.replace("\n\t", " ")
    assert "\nMessage-ID: <" in headers and "\nDate: " in headers   # added for a submission
    submission.mta.wait_log(rf"postpy/submission/smtpd\[\d+\]: {queue_id}: client=localhost"
                            r"\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice\n")


def test_login_mechanism_and_auth_parameter(submission: Submission) -> None:
    with submission.smtp() as s:
        s.user, s.password = "bob", USERS["bob"]
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235
        assert s.mail("bob@test.example", ["AUTH=<>"]) == (250, b"2.1.0 Ok")
        assert s.rcpt("x@foreign.example")[0] == 250
        s.rset()
        assert s.mail("bob@test.example", ["AUTH=bob@test.example"])[0] == 250
        assert s.rcpt("x@foreign.example")[0] == 250
        assert s.data(MESSAGE)[0] == 250
        assert s.docmd("AUTH", "PLAIN " + plain_blob("bob", USERS["bob"]))[0] == 503
    ((_, (env, _)),) = submission.wait_queued(1).items()
    assert env.attrs.get("sasl_method") == "LOGIN" and env.attrs.get("sasl_username") == "bob"


def test_unauthenticated_relay_refused(submission: Submission) -> None:
    with submission.smtp() as s:
        assert s.mail("alice@foreign.example")[0] == 250
        code, text = s.rcpt("someone@foreign.example")
        assert code == 554 and b"5.7.1" in text
        code, _ = s.rcpt("alice@test.example")     # submission takes no unauthenticated mail
        assert code == 554
    submission.mta.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 "
                            r"<someone@foreign\.example>")
    assert submission.mta.queue_ids("incoming") == []


def test_auth_before_starttls_refused(submission: Submission) -> None:
    with smtplib.SMTP("127.0.0.1", submission.submission_port, timeout=30) as s:
        code, text = s.ehlo("client.example")
        assert b"STARTTLS" in text and b"AUTH" not in text
        code, text = s.docmd("AUTH", "PLAIN " + plain_blob("alice", USERS["alice"]))
        assert code in (530, 538), text
        assert s.docmd("MAIL", "FROM:<alice@test.example>")[0] == 530


def raw_auth(sock: socket.socket, blob: str) -> str:
    sock.sendall(f"AUTH PLAIN {blob}\r\n".encode())
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode() + "<EOF>"
        data += chunk
    return data.decode().strip()


def test_wrong_password_slowed_then_cut_off(submission: Submission) -> None:
    with submission.smtp() as s:
        times = []
        for attempt in range(2):
            started = time.monotonic()
            code, text = s.docmd("AUTH", "PLAIN " + plain_blob("alice", f"wrong{attempt}"))
            times.append(time.monotonic() - started)
            assert (code, text) == (535, b"5.7.8 Error: authentication failed")
        assert times[0] >= 0.4 - 0.05 and times[1] >= 0.8 - 0.05     # 0.4 s per failure so far
        code, text = s.docmd("AUTH", "PLAIN " + plain_blob("alice", "wrong2"))
        assert code == 421 and b"too many failed authentication attempts" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    # a new connection from the same client is refused too, even with the right password
    with submission.smtp() as s:
        code, text = s.docmd("AUTH", "PLAIN " + plain_blob("alice", USERS["alice"]))
        assert code == 421, text
    submission.mta.wait_log(r"warning: localhost\[127\.0\.0\.1\]: SASL PLAIN authentication "
                            r"failed: .*sasl_username=alice")
    submission.mta.wait_log(r"too many failed authentication attempts")


def test_sender_login_mismatch_refused(submission: Submission) -> None:
    with submission.smtp() as s:
        s.login("alice", USERS["alice"])
        assert s.mail("bob@test.example")[0] == 250
        code, text = s.rcpt("x@foreign.example")
        assert (code, text) == (553, b"5.7.1 <bob@test.example>: Sender address rejected: "
                                     b"not owned by user alice")
        s.rset()
        assert s.mail("shared@test.example")[0] == 250
        assert s.rcpt("x@foreign.example")[0] == 250
    submission.mta.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 553 5\.7\.1 "
                            r"<bob@test\.example>: Sender address rejected: not owned by user alice")


def test_implicit_tls_on_smtps(submission: Submission) -> None:
    with submission.smtps() as s:
        features = (s.ehlo_resp or b"").decode()
        assert "AUTH PLAIN LOGIN" in features and "STARTTLS" not in features
        s.login("bob", USERS["bob"])
        assert s.sendmail("bob@test.example", ["y@foreign.example"], MESSAGE) == {}
    ((_, (env, content)),) = submission.wait_queued(1).items()
    assert env.attrs.get("protocol") == "ESMTPSA" and env.attrs.get("sasl_username") == "bob"
    assert b"(using TLSv1." in content


def test_plain_exchange_details(submission: Submission) -> None:
    """Empty challenge, cancel, bad base64, unknown mechanism, authzid."""
    with submission.smtp() as s:
        assert s.docmd("AUTH", "PLAIN") == (334, b"")
        assert s.docmd("*") == (501, b"5.0.0 Authentication aborted")
        assert s.docmd("AUTH", "PLAIN !!notbase64") == (501, b"5.5.2 Cannot decode response")
        assert s.docmd("AUTH", "CRAM-MD5")[0] == 504
        assert s.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
        assert s.docmd(b64("alice")) == (334, b"UGFzc3dvcmQ6")
        assert s.docmd(b64(USERS["alice"])) == (235, b"2.7.0 Authentication successful")
    with submission.smtp() as s:
        blob = plain_blob("alice", USERS["alice"], authzid="alice")
        assert s.docmd("AUTH", "PLAIN " + blob)[0] == 235
        assert s.mail("alice@test.example")[0] == 250
        assert s.docmd("AUTH", "PLAIN " + blob)[0] == 503      # already authenticated
