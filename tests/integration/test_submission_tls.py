"""TLS for submission: the example services of etc/master.cf, a service
without a certificate, and a renewed certificate taken into use without a
restart."""

from __future__ import annotations

import hashlib
import os
import shutil
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

from conftest import ROOT, free_port
from submission_setup import (
    PARAMS,
    USERS,
    client_context,
    make_certificate,
    plain_blob,
)


def uncommented_examples(submission: int, smtps: int) -> str:
    """etc/master.cf with its submission/smtps examples switched on, on free ports."""
    lines = []
    for line in (ROOT / "etc" / "master.cf").read_text().splitlines():
        if line.startswith(("#127.0.0.1:2587", "#127.0.0.1:2465", "#  -o")):
            line = line[1:]
        lines.append(line.replace("127.0.0.1:2587", f"127.0.0.1:{submission}")
                     .replace("127.0.0.1:2465", f"127.0.0.1:{smtps}"))
    return "\n".join(lines) + "\n"


def add_users(mta: Any) -> None:
    for user, password in USERS.items():
        assert mta.run("postpy", "passwd", "add", user, input=password + "\n").returncode == 0


def test_master_cf_examples_work_when_enabled(mta_factory: Any, tmp_path: Path) -> None:
    cert = make_certificate(tmp_path)
    submission, smtps = free_port(), free_port()
    mta = mta_factory(master_cf=uncommented_examples(submission, smtps), start=False,
                      **PARAMS, smtpd_tls_cert_file=cert[0], smtpd_tls_key_file=cert[1])
    add_users(mta)
    mta.start()
    with smtplib.SMTP("127.0.0.1", submission, timeout=30) as s:
        s.starttls(context=client_context())
        s.login("alice", USERS["alice"])
        assert s.sendmail("alice@test.example", ["x@foreign.example"], b"Subject: a\r\n\r\nx\r\n") == {}
    with smtplib.SMTP_SSL("127.0.0.1", smtps, timeout=30, context=client_context()) as s:
        s.login("bob", USERS["bob"])
    mta.wait_log(r"postpy/submission/smtpd\[\d+\]: \w+: client=localhost\[127\.0\.0\.1\], "
                 r"sasl_method=PLAIN, sasl_username=alice")


def test_submission_without_certificate_starts_and_refuses(mta_factory: Any) -> None:
    submission, smtps = free_port(), free_port()
    mta = mta_factory(master_cf=uncommented_examples(submission, smtps), **PARAMS)
    with smtplib.SMTP("127.0.0.1", submission, timeout=30) as s:
        _, features = s.ehlo("client.example")
        assert b"STARTTLS" not in features and b"AUTH" not in features
        assert s.docmd("STARTTLS") == (454, b"4.7.0 TLS not available due to local problem")
        assert s.docmd("AUTH", "PLAIN " + plain_blob("alice", "x"))[0] == 530
        assert s.mail("alice@test.example") == (530, b"5.7.0 Must issue a STARTTLS command first")
    # implicit TLS without a certificate: the connection is closed at once
    with socket.create_connection(("127.0.0.1", smtps), timeout=10) as raw:
        assert raw.recv(100) == b""
    mta.wait_log(r"smtpd_tls_security_level = encrypt but no smtpd_tls_cert_file")
    mta.wait_log(r"smtpd_tls_wrappermode = yes but no smtpd_tls_cert_file")


def peer_fingerprint(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_context().wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.recv(100)       # the greeting: the session really works
        return hashlib.sha256(der).hexdigest()


def test_renewed_certificate_is_used_without_restart(mta_factory: Any,
                                                    shared_dir: Path) -> None:
    tmp_path = shared_dir       # smtpd must reach the files after dropping privileges
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    live = tmp_path / "live"
    live.mkdir()
    old, new = make_certificate(first), make_certificate(second)
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(old[0], cert)
    shutil.copy(old[1], key)
    os.chmod(key, 0o644)        # smtpd re-reads it after dropping privileges
    submission, smtps = free_port(), free_port()
    mta = mta_factory(master_cf=uncommented_examples(submission, smtps), **PARAMS,
                      smtpd_tls_cert_file=str(cert), smtpd_tls_key_file=str(key))
    with smtplib.SMTP_SSL("127.0.0.1", smtps, timeout=30, context=client_context()) as s:
        s.noop()        # one connection served: the same smtpd process serves the next
    before = peer_fingerprint(smtps)
    # the way certbot renews: new files put in place (rename), key first
    for source, target in ((new[1], key), (new[0], cert)):
        shutil.copy(source, f"{target}.new")
        os.chmod(f"{target}.new", 0o644)
        os.rename(f"{target}.new", target)
    after = peer_fingerprint(smtps)
    assert before != after
    expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(Path(new[0]).read_text())).hexdigest()
    assert after == expected
    assert "still using the certificate loaded before" not in mta.log()
