"""postpy relaying to real peers: another postpy found by MX, a peer that drops the
connection mid-DATA (then accepts the retry), and STARTTLS to a self-signed peer."""

from __future__ import annotations

import os
import shutil
import smtplib
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, wait_for
from dnsserver import DnsServer, skip_without_dnsmasq
from smtppeers import PeerState, ThreadPeer, make_cert

BODY = b"Subject: relay\r\n\r\n.dot line\r\nsecond line\r\n"
FAST_RETRY = {"minimal_backoff_time": "1s", "maximal_backoff_time": "1s", "queue_run_delay": "1s"}


@pytest.fixture
def area() -> Iterator[Path]:
    """A directory every uid can reach (Maildirs, certificates)."""
    path = Path(tempfile.mkdtemp(prefix="postpy-relay-it-"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def submit(mta, rcpts: list[str], sender: str = "sender@test.example") -> str:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail(sender, rcpts, BODY)
    return mta.wait_log(rf"(\w+): from=<{sender}>, size=\d+, nrcpt={len(rcpts)}", 20).group(1)


def maildir_files(path: Path) -> list[Path]:
    new = path / "new"
    return sorted(new.iterdir()) if new.exists() else []


@skip_without_dnsmasq
def test_two_postpy_instances_relay_by_mx(mta_factory, area):
    dns = DnsServer()      # b.test MX 10 mx.b.test, mx.b.test A 127.0.0.2
    try:
        default_cf = (ROOT / "etc" / "master.cf").read_text()
        b = mta_factory(start=False, master_cf=default_cf.replace("127.0.0.1:2525", "127.0.0.2:{port}"),
                        inet_interfaces="127.0.0.2", myhostname="mx.b.test",
                        mydestination="$myhostname, b.test", default_privs="nobody")
        maildir = area / "bob-Maildir"
        (b.config_dir / "aliases").write_text(f"postmaster: root\nbob: {maildir}/\n")
        built = b.run("postalias", str(b.config_dir / "aliases"))
        assert built.returncode == 0, built.stderr
        b.start()
        a = mta_factory(myhostname="mx.a.test", dns_resolver_address=dns.address,
                        smtp_tcp_port=str(b.port))
        queue_id = submit(a, ["bob@b.test"])
        found = a.wait_log(rf"{queue_id}: to=<bob@b.test>, relay=mx.b.test\[127.0.0.2\]:{b.port}, .*"
                           r"dsn=2.0.0, status=sent \(250 2.0.0 Ok: queued as (\w+)\)", 30)
        remote_id = found.group(1)
        a.wait_log(rf"{queue_id}: removed", 20)
        b.wait_log(rf"{remote_id}: to=<bob@b.test>, relay=local, .*status=sent \(delivered to maildir\)", 30)
        files = wait_for(lambda: maildir_files(maildir), 10, "the message in bob's Maildir")
        assert isinstance(files, list) and len(files) == 1
        text = files[0].read_bytes()
        assert b"\n.dot line\nsecond line\n" in text
        assert b"from mx.a.test (" in text            # B's Received: names A's EHLO
    finally:
        dns.stop()


def test_drop_mid_data_defers_then_retry_delivers_once(mta_factory):
    with ThreadPeer(PeerState(drop_in_data=1)) as peer:
        mta = mta_factory(relayhost=f"[127.0.0.1]:{peer.port}", **FAST_RETRY)
        queue_id = submit(mta, ["bob@remote.test"])
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{peer.port}, .*"
                     r"dsn=4.4.2, status=deferred \(lost connection with 127.0.0.1\[127.0.0.1\] while "
                     r"sending (message body|end of data -- message may be sent more than once)\)", 20)
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{peer.port}, .*"
                     r"status=sent \(250 2.0.0 Ok: queued as PY1\)", 30)
        mta.wait_log(rf"{queue_id}: removed", 20)
        assert len(peer.state.messages) == 1
        assert peer.state.envelopes == [("sender@test.example", ["bob@remote.test"])]
        assert b"\r\n..dot line\r\nsecond line\r\n.\r\n" in peer.state.messages[0]
        assert mta.log().count(f"{queue_id}: to=<bob@remote.test>") == 2


@pytest.fixture
def tls_peer(area: Path) -> Iterator[tuple[ThreadPeer, Path]]:
    cert, key = make_cert(area)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    with ThreadPeer(PeerState(tls=ctx)) as peer:
        yield peer, cert


def test_starttls_may_delivers_encrypted(mta_factory, tls_peer):
    peer, _ = tls_peer
    mta = mta_factory(relayhost=f"[127.0.0.1]:{peer.port}", smtp_tls_security_level="may")
    queue_id = submit(mta, ["bob@remote.test"])
    mta.wait_log(rf"Untrusted TLS connection established to 127.0.0.1\[127.0.0.1\]:{peer.port}: "
                 r"TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)", 20)
    mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, .*status=sent", 20)
    assert peer.state.tls_sessions == 1 and len(peer.state.messages) == 1


def test_starttls_verify_without_the_ca_defers(mta_factory, tls_peer):
    peer, _ = tls_peer
    mta = mta_factory(relayhost=f"[127.0.0.1]:{peer.port}", smtp_tls_security_level="verify")
    queue_id = submit(mta, ["bob@remote.test"])
    mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{peer.port}, .*"
                 r"dsn=4.7.5, status=deferred \(Server certificate not verified\)", 20)
    assert peer.state.messages == []


def test_starttls_verify_with_the_ca_delivers(mta_factory, tls_peer):
    peer, cert = tls_peer
    mta = mta_factory(relayhost=f"[127.0.0.1]:{peer.port}", smtp_tls_security_level="verify",
                      smtp_tls_CAfile=str(cert))
    queue_id = submit(mta, ["bob@remote.test"])
    mta.wait_log(rf"Verified TLS connection established to 127.0.0.1\[127.0.0.1\]:{peer.port}", 20)
    mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, .*status=sent", 20)
    assert len(peer.state.messages) == 1
