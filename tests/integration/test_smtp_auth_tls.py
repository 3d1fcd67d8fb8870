"""postpy's smtp client sending like a real server (issue 14, first part), real peers on loopback:

- SMTP AUTH after STARTTLS to a smarthost: another postpy's submission service
  (passwd-file users) and a Postfix using Dovecot SASL; a wrong password defers with
  the server's reply in mailq; with TLS off the password is not sent; no password
  ever in a maillog.
- smtp_tls_policy_maps: encrypt to a server without STARTTLS, fingerprint right and
  wrong, verify with a CA file, secure with match=, a malformed entry.
- BDAT to Postfix (which offers CHUNKING), checked byte for byte; delivery to [::1].
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, wait_for
from postfixpeer import PostfixInstance, unavailable
from smtppeers import PeerState, ThreadPeer, make_cert
from submission_setup import USERS, certificate, dovecot_helper, start_submission  # noqa: F401

from postpy.smtp.tls import fingerprints

FAST_RETRY = {"minimal_backoff_time": "1s", "maximal_backoff_time": "1s", "queue_run_delay": "1s"}
CLIENT = {"myhostname": "client.test.example", "mydestination": "$myhostname, localhost", **FAST_RETRY}
BODY = "Subject: relay with auth\r\n\r\n.dot line\r\nsecond line\r\n"
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the daemons drop privileges: run as root")


@pytest.fixture
def area() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-authtls-it-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def password_table(mta: Any, key: str, value: str) -> str:
    """A texthash table readable by root only: the smtp agent opens it before dropping privileges."""
    path = mta.config_dir / "sasl_passwd"
    path.write_text(f"{key} {value}\n")
    os.chmod(path, 0o600)
    return f"texthash:{path}"


def client(mta_factory: Callable[..., Any], relayhost: str, user: str, password: str,
           **params: str) -> Any:
    mta = mta_factory(start=False, relayhost=relayhost, **CLIENT, smtp_sasl_auth_enable="yes",
                      smtp_sasl_tls_security_options="noanonymous", **params)
    table = password_table(mta, relayhost, f"{user}:{password}")
    mta.write_main_cf(dict(mta.params, smtp_sasl_password_maps=table))
    return mta.start()


def submit(mta: Any, sender: str, rcpt: str, body: str = BODY) -> str:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as c:
        c.ehlo()
        c.mail(sender)
        c.rcpt(rcpt)
        code, reply = c.data(body.encode())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def no_secret_in(password: str, *logs: str) -> None:
    import base64
    for log in logs:
        assert password not in log
        assert base64.b64encode(f"\0alice\0{password}".encode()).decode() not in log


def mailq(mta: Any) -> str:
    return " ".join(mta.run("mailq").stdout.split())


# -- AUTH to another postpy's submission service ---------------------------------

@needs_root
def test_auth_after_starttls_to_postpy_submission(mta_factory, certificate):  # noqa: F811
    cleanup: list[Callable[[], None]] = []
    sub = start_submission(mta_factory, "passwd-file", certificate, cleanup)
    relay = f"[127.0.0.1]:{sub.submission_port}"
    mta = client(mta_factory, relay, "alice", USERS["alice"], smtp_tls_security_level="encrypt")
    queue_id = submit(mta, "alice@test.example", "bob@test.example")
    mta.wait_log(rf"Untrusted TLS connection established to 127.0.0.1\[127.0.0.1\]:{sub.submission_port}: TLSv1")
    mta.wait_log(rf"{queue_id}: to=<bob@test.example>, relay=127.0.0.1\[127.0.0.1\]:{sub.submission_port}, "
                 r".*status=sent \(250 2.0.0 Ok: queued as \w+\)", 30)
    sub.mta.wait_log(r"sasl_method=PLAIN, sasl_username=alice")
    queued = sub.wait_queued(1)
    (env, content), = queued.values()
    assert env.sender == "alice@test.example" and b"\n.dot line\nsecond line\n" in content
    no_secret_in(USERS["alice"], mta.log(), sub.all_logs())


@needs_root
def test_wrong_password_defers_with_the_server_reply_in_mailq(mta_factory, certificate):  # noqa: F811
    cleanup: list[Callable[[], None]] = []
    sub = start_submission(mta_factory, "passwd-file", certificate, cleanup)
    relay = f"[127.0.0.1]:{sub.submission_port}"
    wrong = "Wr0ng-passw0rd-for-alice"
    mta = client(mta_factory, relay, "alice", wrong, smtp_tls_security_level="encrypt")
    queue_id = submit(mta, "alice@test.example", "bob@test.example")
    text = (r"SASL authentication failed; server 127\.0\.0\.1\[127\.0\.0\.1\] said: 535 5\.7\.8 "
            r"Error: authentication failed")
    mta.wait_log(rf"{queue_id}: to=<bob@test.example>, .*dsn=4\.7\.8, status=deferred \({text}", 30)
    def listed() -> str:
        text = mailq(mta)
        return text if queue_id in text and "SASL" in text else ""
    listing = wait_for(listed, 20, "the deferral reason in mailq")
    assert "(SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8" in str(listing)
    assert "bounced" not in mta.log()
    no_secret_in(wrong, mta.log(), sub.all_logs(), str(listing))


@needs_root
def test_tls_off_never_sends_the_password(mta_factory, certificate):  # noqa: F811
    cleanup: list[Callable[[], None]] = []
    # The plain smtpd port offers AUTH without TLS here (smtpd_tls_auth_only = no).
    sub = start_submission(mta_factory, "passwd-file", certificate, cleanup,
                           smtpd_sasl_auth_enable="yes", smtpd_tls_auth_only="no")
    relay = f"[127.0.0.1]:{sub.port}"
    mta = client(mta_factory, relay, "alice", USERS["alice"], smtp_tls_security_level="none")
    queue_id = submit(mta, "alice@test.example", "bob@test.example")
    mta.wait_log(rf"{queue_id}: to=<bob@test.example>, .*dsn=4\.7\.0, status=deferred \(SASL authentication "
                 r"failed; cannot authenticate to server 127\.0\.0\.1\[127\.0\.0\.1\]: no mechanism available "
                 r"\(PLAIN LOGIN not allowed without TLS by smtp_sasl_security_options", 30)
    assert "sasl_username" not in sub.mta.log() and "AUTH" not in sub.mta.log()
    assert sub.queued() == {}
    no_secret_in(USERS["alice"], mta.log(), sub.all_logs())


# -- AUTH to Postfix with Dovecot SASL --------------------------------------------

@pytest.mark.skipif(bool(unavailable() or dovecot_helper.available()),
                    reason=unavailable() or dovecot_helper.available() or "-")
@pytest.mark.parametrize("right", [True, False], ids=["right-password", "wrong-password"])
def test_auth_to_postfix_with_dovecot_sasl(mta_factory, certificate, right):  # noqa: F811
    dovecot = dovecot_helper.start_dovecot(USERS)
    try:
        with PostfixInstance(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="dovecot",
                             smtpd_sasl_path=dovecot.socket_path, smtpd_tls_security_level="may",
                             smtpd_tls_cert_file=certificate[0], smtpd_tls_key_file=certificate[1],
                             smtpd_tls_auth_only="yes", mynetworks="192.0.2.1/32",
                             smtpd_relay_restrictions="permit_sasl_authenticated, reject") as postfix:
            relay = f"[127.0.0.1]:{postfix.port}"
            password = USERS["alice"] if right else "N0t-alices-password"
            mta = client(mta_factory, relay, "alice", password)
            queue_id = submit(mta, "alice@test.example", "bob@pf.test")
            if right:
                mta.wait_log(rf"{queue_id}: to=<bob@pf.test>, .*status=sent \(250 2.0.0 Ok: (\d+ bytes )?queued as", 30)
                postfix.wait_log(r"sasl_method=PLAIN, sasl_username=alice")
                stored = wait_for(postfix.maildir, 20, "the message in Postfix's Maildir")
                assert b"\n.dot line\nsecond line\n" in stored[0]       # type: ignore[index]
            else:
                mta.wait_log(rf"{queue_id}: to=<bob@pf.test>, .*status=deferred \(SASL authentication failed; "
                             rf"server 127\.0\.0\.1\[127\.0\.0\.1\] said: 535 5\.7\.8 Error: authentication "
                             r"failed", 30)
                assert "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535" in mailq(mta)
            no_secret_in(password, mta.log(), postfix.log(), dovecot.log())
    finally:
        dovecot_helper.remove(dovecot)


# -- smtp_tls_policy_maps ---------------------------------------------------------

@needs_root
def test_tls_policy_map_entries_each_take_effect(mta_factory, area):
    cert, key = make_cert(area)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    fp = fingerprints(ssl.PEM_cert_to_DER_cert(cert.read_text()))[0]
    names = ["plain", "fp_ok", "fp_bad", "verify", "secure_ok", "secure_bad", "may", "broken"]
    peers = {n: ThreadPeer(PeerState(tls=None if n == "plain" else ctx)) for n in names}
    try:
        hop = {n: f"[127.0.0.1]:{p.port}" for n, p in peers.items()}
        policy = area / "tls_policy"
        policy.write_text(f"{hop['plain']} encrypt\n{hop['fp_ok']} fingerprint match=00:01|{fp}\n"
                          f"{hop['fp_bad']} fingerprint match=AB:CD:EF\n{hop['verify']} verify\n"
                          f"{hop['secure_ok']} secure match=localhost\n"
                          f"{hop['secure_bad']} secure match=.elsewhere.example\n"
                          f"{hop['broken']} verify match\n")
        transport = ", ".join(f"{n.replace('_', '-')}.test=smtp:{h}" for n, h in hop.items())
        mta = mta_factory(smtp_tls_policy_maps=f"texthash:{policy}", smtp_tls_CAfile=str(cert),
                          smtp_tls_loglevel="2", transport_maps=f"inline:{{{transport}}}", **CLIENT)
        ids = {n: submit(mta, "alice@test.example", f"bob@{n.replace('_', '-')}.test") for n in names}

        def outcome(n: str, pattern: str) -> None:
            mta.wait_log(rf"{ids[n]}: to=<bob@{n.replace('_', '-')}.test>, .*{pattern}", 30)

        outcome("plain", r"dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host "
                         r"127\.0\.0\.1\[127\.0\.0\.1\]\)")
        for ok in ("fp_ok", "verify", "secure_ok"):
            outcome(ok, r"status=sent")
            mta.wait_log(rf"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                         rf"{peers[ok].port}: TLSv1\.[23] with cipher")
        for bad in ("fp_bad", "secure_bad"):
            outcome(bad, r"dsn=4\.7\.5, status=deferred \(Server certificate not verified\)")
        mta.wait_log(rf"certificate verification failed for 127\.0\.0\.1\[127\.0\.0\.1\]:{peers['fp_bad'].port}: "
                     r"fingerprint mismatch")
        outcome("may", r"status=sent")
        mta.wait_log(rf"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:{peers['may'].port}")
        mta.wait_log(rf"127\.0\.0\.1\[127\.0\.0\.1\]:{peers['may'].port}: subject_CN=.*fingerprint={fp}")
        outcome("broken", r"dsn=4\.7\.5, status=deferred \(TLS policy lookup for \[127\.0\.0\.1\]:\d+ failed: "
                          r"malformed policy")
        mta.wait_log(r"warning: smtp_tls_policy_maps: malformed TLS policy for '\[127\.0\.0\.1\]:\d+': "
                     r"malformed attribute 'match'")
        assert len(peers["plain"].state.messages) == 0 and len(peers["fp_bad"].state.messages) == 0
        assert all(len(peers[n].state.messages) == 1 for n in ("fp_ok", "verify", "secure_ok", "may"))
        assert "Traceback" not in mta.log()
    finally:
        for p in peers.values():
            p.__exit__()


# -- BDAT and IPv6 ------------------------------------------------------------------

@pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "-")
def test_bdat_to_postfix_byte_for_byte(mta_factory):
    message = ("From: alice@test.example\r\nTo: bob@pf.test\r\nSubject: chunking\r\n"
               "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bdat-1@test.example>\r\n\r\n"
               ".leading dot\r\n..two dots\r\n.\r\nline with trailing space \r\n"
               + "".join(f"line {i} {'x' * (i % 90)}\r\n" for i in range(3000)) + "last line\r\n")
    with PostfixInstance() as postfix:
        mta = mta_factory(transport_maps=f"inline:{{pf.test=smtp:[127.0.0.1]:{postfix.port}}}", **CLIENT)
        queue_id = submit(mta, "alice@test.example", "bob@pf.test", message)
        mta.wait_log(rf"{queue_id}: to=<bob@pf.test>, .*status=sent \(250 2.0.0 Ok: \d+ bytes queued as \w+\)", 30)
        postfix.wait_log(r"disconnect from \S+ ehlo=1 mail=1 rcpt=1 bdat=1 quit=1 commands=5")
        stored = wait_for(postfix.maildir, 20, "the message in Postfix's Maildir")
        assert isinstance(stored, list) and len(stored) == 1
        lf = message.replace("\r\n", "\n").encode()
        assert stored[0][stored[0].index(b"From: alice@test.example\n"):] == lf


def _has_ipv6_loopback() -> str:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return ""
    except OSError as exc:
        return f"this machine has no usable ::1 ({exc.strerror})"


@pytest.mark.skipif(bool(_has_ipv6_loopback()), reason=_has_ipv6_loopback() or "-")
@pytest.mark.parametrize("form", ["[::1]", "[ipv6:::1]"])
def test_delivery_to_ipv6_loopback(mta_factory, form):
    with ThreadPeer(host="::1") as peer:
        mta = mta_factory(relayhost=f"{form}:{peer.port}", **CLIENT)
        queue_id = submit(mta, "alice@test.example", "bob@remote.test")
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=\S+\[::1\]:{peer.port}, .*status=sent", 30)
        assert peer.state.envelopes == [("alice@test.example", ["bob@remote.test"])]
