"""A started system with the submission (STARTTLS) and smtps (implicit TLS)
services, for the SMTP AUTH tests (test_submission_*.py).

master.cf holds the three smtpd services and cleanup but no qmgr, so an
accepted message stays in ``incoming/`` where the test reads it.  Users come
from the password file (``postpy passwd add``, the real command) or from a
real Dovecot (tests/dovecot_helper.py), chosen by ``backend``.
"""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for

from postpy.queue import qfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dovecot_helper  # noqa: E402

# Distinctive passwords, so that the log scan cannot match by accident.
USERS = {"alice": "Tr0ub4dor&3-alice-pw", "bob": "c0rrect-h0rse-bob-pw"}
BACKENDS = ["passwd-file", "dovecot"]

MASTER_CF = """\
127.0.0.1:{port} inet  n  -  n  -  -  smtpd
127.0.0.1:{submission} inet n - n - - smtpd
  -o syslog_name=postpy/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
127.0.0.1:{smtps} inet n - n - - smtpd
  -o syslog_name=postpy/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
cleanup           unix  -  -  n  -  0  cleanup
"""

PARAMS = {
    "mynetworks": "127.0.0.1/32",
    "local_recipient_maps": "inline:{alice=x, bob=x, postmaster=x}",
    "smtpd_error_sleep_time": "0",
    "smtpd_client_event_limit_exceptions": "",
    "smtpd_client_connection_count_limit": "0",
    "smtpd_sasl_failure_delay": "0.4s",
    "smtpd_sasl_failure_limit": "3",
}


def plain_blob(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate made by ``openssl req`` (skip without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=mx.test.example"], check=True, capture_output=True, timeout=60)
    os.chmod(directory, 0o755)
    os.chmod(key, 0o644)   # a throw-away test tree; the daemons drop privileges
    return str(cert), str(key)


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Submission:
    mta: Any
    submission_port: int
    smtps_port: int
    backend: str
    cert: tuple[str, str]
    dovecot: dovecot_helper.Dovecot | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.mta.port)

    def smtp(self) -> smtplib.SMTP:
        """A client on the submission port after EHLO and STARTTLS."""
        s = smtplib.SMTP("127.0.0.1", self.submission_port, timeout=30)
        s.ehlo("client.example")
        s.starttls(context=client_context())
        s.ehlo("client.example")
        return s

    def smtps(self) -> smtplib.SMTP_SSL:
        s = smtplib.SMTP_SSL("127.0.0.1", self.smtps_port, timeout=30, context=client_context())
        s.ehlo("client.example")
        return s

    def queued(self) -> dict[str, tuple[qfile.Envelope, bytes]]:
        incoming = self.mta.queue_dir / "incoming"
        return {qid: qfile.read_all(str(incoming / qid)) for qid in self.mta.queue_ids("incoming")}

    def wait_queued(self, count: int) -> dict[str, tuple[qfile.Envelope, bytes]]:
        wait_for(lambda: len(self.mta.queue_ids("incoming")) >= count, 15, f"{count} queue files")
        return self.queued()

    def all_logs(self) -> str:
        text = self.mta.log()
        if self.dovecot is not None:
            text += self.dovecot.log()
        return text


def master_cf(submission: int, smtps: int) -> str:
    return MASTER_CF.replace("{submission}", str(submission)).replace("{smtps}", str(smtps))


def start_submission(mta_factory: Callable[..., Any], backend: str, cert: tuple[str, str],
                     cleanup: list[Callable[[], None]], **params: str) -> Submission:
    submission, smtps = free_port(), free_port()
    main = dict(PARAMS, smtpd_tls_cert_file=cert[0], smtpd_tls_key_file=cert[1])
    dovecot = None
    if backend == "dovecot":
        why = dovecot_helper.available()
        if why:
            pytest.skip(why)
        dovecot = dovecot_helper.start_dovecot(USERS)
        cleanup.append(lambda: dovecot_helper.remove(dovecot))
        main.update(smtpd_sasl_type="dovecot", smtpd_sasl_path=dovecot.socket_path)
    main.update(params)
    mta = mta_factory(master_cf=master_cf(submission, smtps), start=False, **main)
    if "smtpd_sender_login_maps" not in params:
        owners = mta.config_dir / "sender_login"
        owners.write_text("alice@test.example alice\nbob@test.example bob\n"
                          "shared@test.example alice, bob\n")
        mta.write_main_cf(dict(mta.params, smtpd_sender_login_maps=f"texthash:{owners}"))
    if backend == "passwd-file":
        for user, password in USERS.items():
            done = mta.run("postpy", "passwd", "add", user, input=password + "\n")
            assert done.returncode == 0, done.stderr
    mta.start()
    return Submission(mta, submission, smtps, backend, cert, dovecot)


@pytest.fixture(scope="module")
def certificate() -> Iterator[tuple[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="postpy-cert-"))
    try:
        yield make_certificate(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def submission(request: pytest.FixtureRequest, mta_factory: Callable[..., Any],
               certificate: tuple[str, str]) -> Iterator[Submission]:
    cleanup: list[Callable[[], None]] = []
    try:
        yield start_submission(mta_factory, request.param, certificate, cleanup)
    finally:
        for step in cleanup:
            step()
