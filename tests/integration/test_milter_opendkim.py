"""smtpd_milters with the real OpenDKIM (Debian: opendkim, opendkim-tools).

Two OpenDKIM processes run in a temporary tree on loopback ports (never the
system's service): one signs (``Mode s``, a key made by opendkim-genkey),
one verifies (``Mode v``, the public key given with ``TestPublicKeys``).
Two postpy instances: the signer's smtpd has ``-o smtpd_milters=`` the
signing milter (plus two services whose milter is down, one per
``milter_default_action``); the verifier's smtpd has the verifying milter.
A message signed and delivered by the first is handed as it is to the
second, which must add ``Authentication-Results: ... dkim=pass``; the
same message altered after signing must get ``dkim=fail``.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import IS_ROOT, MTA, ROOT, ensure_system_users, free_port, wait_for

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="needs root: master runs daemons as mail_owner"),
    pytest.mark.skipif(not (Path(OPENDKIM).exists() and Path(GENKEY).exists()),
                       reason="opendkim not installed (Debian: opendkim, opendkim-tools)"),
]

SERVICES = """\
127.0.0.1:{down_tempfail} inet n - n - - smtpd
  -o smtpd_milters=inet:127.0.0.1:{dead}
  -o milter_default_action=tempfail
127.0.0.1:{down_accept} inet n - n - - smtpd
  -o smtpd_milters=inet:127.0.0.1:{dead}
  -o milter_default_action=accept
"""


@dataclass
class System:
    signer: MTA
    verifier: MTA
    down_tempfail: int
    down_accept: int
    base: Path


def start_opendkim(tree: Path, name: str, conf: str, port: int) -> subprocess.Popen[bytes]:
    path = tree / f"{name}.conf"
    path.write_text(conf + f"Socket inet:{port}@127.0.0.1\nPidFile {tree}/{name}.pid\nSyslog no\n")
    proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(path)], stdout=subprocess.DEVNULL,
                            stderr=open(tree / f"{name}.log", "wb"), start_new_session=True)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"opendkim {name} exited: {(tree / f'{name}.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            return False
        return True

    wait_for(listening, 10, f"opendkim {name} to listen")
    return proc


def make_mta(base: Path, name: str, milter_port: int, extra: str = "") -> MTA:
    master_cf = (ROOT / "etc" / "master.cf").read_text()
    master_cf = master_cf.replace(
        "smtpd\n", f"smtpd\n  -o smtpd_milters=inet:127.0.0.1:{milter_port}\n", 1) + extra
    (base / name).mkdir()
    mta = MTA(base / name, master_cf, {})
    mta.write_aliases(f"postmaster: root\nbox: {base}/{name}/mail/box.mbox\n")
    return mta.start()


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    ensure_system_users()
    base = Path(tempfile.mkdtemp(prefix="postpy-test-dkim-"))
    base.chmod(0o755)
    keys = base / "keys"
    keys.mkdir()
    subprocess.run([GENKEY, "-b", "1024", "-d", "example.org", "-s", "sel", "-D", str(keys)],
                   check=True, timeout=30)
    record = (keys / "sel.txt").read_text()
    txt = "".join(part for part in record.split('"')[1::2])      # the TXT record's strings
    (keys / "public").write_text(f"sel._domainkey.example.org {txt}\n")
    sign_port, verify_port, dead = free_port(), free_port(), free_port()
    procs = [
        start_opendkim(base, "sign", f"Mode s\nDomain example.org\nSelector sel\n"
                       f"KeyFile {keys}/sel.private\nCanonicalization relaxed/simple\n"
                       "InternalHosts 127.0.0.1\nRequireSafeKeys no\n", sign_port),
        start_opendkim(base, "verify", f"Mode v\nTestPublicKeys {keys}/public\n"
                       "AuthservID verify.test\nInternalHosts 192.0.2.1\n", verify_port),
    ]
    ports = {"down_tempfail": free_port(), "down_accept": free_port()}
    mtas: list[MTA] = []
    try:
        mtas.append(make_mta(base, "signer", sign_port, SERVICES.format(dead=dead, **ports)))
        mtas.append(make_mta(base, "verifier", verify_port))
        yield System(mtas[0], mtas[1], ports["down_tempfail"], ports["down_accept"], base)
    finally:
        for mta in mtas:
            mta.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def mbox(mta: MTA) -> Path:
    return mta.base / "mail" / "box.mbox"


def delivered(mta: MTA, marker: str) -> bytes:
    """The one message in the mailbox that holds ``marker`` (its mbox From line removed)."""
    path = mbox(mta)
    try:
        wait_for(lambda: path.exists() and marker.encode() in path.read_bytes(), 15, f"{marker!r} delivered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(mta.log().splitlines()[-15:])) from None
    messages = [m for m in path.read_bytes().split(b"\nFrom ") if marker.encode() in m]
    assert len(messages) == 1
    text = messages[0].split(b"\n", 1)[1]         # without the mbox From line
    return text.replace(b"\n>From ", b"\nFrom ").rstrip(b"\n") + b"\n"


def send(port: int, message: bytes, sender: str = "alice@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, ["box@test.example"], message)


def message(marker: str) -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: box@test.example\r\nSubject: {marker}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{marker}@example.org>\r\n\r\n"
            f"Hello,\r\nthis is {marker}.\r\n").encode()


def verify(system: System, signed: bytes, marker: str) -> str:
    """Hand the message on as it arrived (less the headers final delivery
    added, which a relay would not have); the verifier's results."""
    head, body = signed.split(b"\n\n", 1)
    head = b"\n".join(line for line in head.split(b"\n")
                      if not line.startswith((b"Delivered-To:", b"Return-Path:")))
    send(system.verifier.port, (head + b"\n\n" + body).replace(b"\n", b"\r\n"))
    result = delivered(system.verifier, marker)
    headers = result.split(b"\n\n", 1)[0].decode()
    return " ".join(line.strip() for line in headers.splitlines()
                    if line.startswith(("Authentication-Results", " ", "\t")) or "dkim=" in line)


def test_signed_on_the_way_in_and_verified_by_a_second_opendkim(system: System) -> None:
    send(system.signer.port, message("dkim-one"))
    signed = delivered(system.signer, "dkim-one")
    assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.org; s=sel;" in signed
    assert signed.count(b"DKIM-Signature:") == 1                       # applied once
    assert "milter-reject" not in system.signer.log()
    results = verify(system, signed, "dkim-one")
    assert "verify.test" in results and "dkim=pass" in results, results


def test_altered_after_signing_fails(system: System) -> None:
    send(system.signer.port, message("dkim-two"))
    signed = delivered(system.signer, "dkim-two")
    assert b"DKIM-Signature:" in signed
    altered = signed.replace(b"this is dkim-two.", b"this is dkim-two, changed.")
    results = verify(system, altered, "dkim-two")
    assert "dkim=fail" in results, results


def test_milter_down_tempfail_gives_451(system: System) -> None:
    with smtplib.SMTP("127.0.0.1", system.down_tempfail, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("alice@example.org") == (451, b"4.7.1 Service unavailable - try again later")
        assert client.noop()[0] == 250                                  # smtpd keeps serving
    system.signer.wait_log(r"NOQUEUE: milter-reject: MAIL from localhost\[127\.0\.0\.1\]: "
                           r"451 4\.7\.1 Service unavailable - try again later; from=<alice@example\.org> "
                           r"proto=ESMTP helo=<client\.example>")


def test_milter_down_accept_delivers(system: System) -> None:
    send(system.down_accept, message("dkim-down"))
    text = delivered(system.signer, "dkim-down")
    assert b"DKIM-Signature" not in text
    system.signer.wait_log(r"milter_default_action = accept")
