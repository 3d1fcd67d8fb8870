"""A real DNS server on loopback for the smtp client's tests: dnsmasq + a test zone.

:class:`DnsServer` starts ``dnsmasq`` (Debian package dnsmasq-base) on
127.0.0.1:<free port>, answering only from the zone below (``no-resolv``,
``no-hosts``; anything else under ``.test`` is NXDOMAIN through
``local=/test/``).  postpy reaches it with ``dns_resolver_address =
127.0.0.1:<port>``.

For the SERVFAIL case dnsmasq forwards ``servfail.test`` to a tiny upstream
in this process that answers every query with RCODE 2 (SERVFAIL), so the
client sees a real SERVFAIL relayed by a real server (dnsmasq itself
answers a dead upstream with silence, which is the timeout case).

The zone (``extra`` adds dnsmasq lines, e.g. ``mx-host=...``)::

    b.test             MX 10 mx.b.test        mx.b.test      A 127.0.0.2
    multi.test         MX 10 one, 10 two, 20 backup (.multi.test: 127.0.0.11/12/13)
    nullmx.test        MX 0 .                  (RFC 7505)
    aonly.test         no MX, A 127.0.0.3
    loop.test          MX 10 self.loop.test    self.loop.test A 127.0.0.1
    loopbehind.test    MX 10 other.loopbehind.test (127.0.0.4), 20 self.loop.test
    nx.test            NXDOMAIN
    servfail.test      SERVFAIL (and everything below it)
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.resolver
import peer_process
import pytest
from conftest import IS_ROOT, free_port, wait_for

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq",) if os.access(p, os.X_OK)), None)

ZONE = """\
mx-host=b.test,mx.b.test,10
host-record=mx.b.test,127.0.0.2
mx-host=multi.test,one.multi.test,10
mx-host=multi.test,two.multi.test,10
mx-host=multi.test,backup.multi.test,20
host-record=one.multi.test,127.0.0.11
host-record=two.multi.test,127.0.0.12
host-record=backup.multi.test,127.0.0.13
dns-rr=nullmx.test,15,000000
host-record=aonly.test,127.0.0.3
mx-host=loop.test,self.loop.test,10
host-record=self.loop.test,127.0.0.1
mx-host=loopbehind.test,other.loopbehind.test,10
mx-host=loopbehind.test,self.loop.test,20
host-record=other.loopbehind.test,127.0.0.4
local=/test/
"""


class ServfailUpstream:
    """UDP server that answers every query with SERVFAIL (header flags QR|RD|RA, RCODE 2)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                query, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            if len(query) < 12:
                continue
            flags = 0x8000 | ((query[2] & 0x01) << 8) | 0x80 | 2
            answer = query[:2] + flags.to_bytes(2, "big") + query[4:6] + b"\0" * 6 + query[12:]
            self.sock.sendto(answer, peer)

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


class DnsServer:
    def __init__(self, extra: list[str] | None = None) -> None:
        assert DNSMASQ, "dnsmasq is not installed"
        self.upstream = ServfailUpstream()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postpy-dns-"))
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(ZONE + "\n".join(extra or []) + "\n"
                        + f"server=/servfail.test/127.0.0.1#{self.upstream.port}\n")
        os.chmod(self.dir, 0o755)
        os.chmod(conf, 0o644)
        argv = [DNSMASQ, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--no-negcache", "--log-facility=-",
                f"--user={getpass.getuser()}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is not None or self._answers(), 10, "dnsmasq to answer")
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            raise AssertionError(f"dnsmasq exited: {err}")

    @property
    def address(self) -> str:
        """The value for dns_resolver_address."""
        return f"127.0.0.1:{self.port}"

    def resolver(self) -> dns.resolver.Resolver:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.lifetime = 2
        return r

    def _answers(self) -> bool:
        r = self.resolver()
        r.lifetime = 0.3
        try:
            r.resolve("mx.b.test", "A")
            return True
        except dns.exception.DNSException:
            return False

    def stop(self) -> None:
        peer_process.terminate(self.proc)
        self.upstream.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


skip_without_dnsmasq = pytest.mark.skipif(
    DNSMASQ is None and not IS_ROOT,
    reason="dnsmasq is not installed and this is not root (scripts/test-deps installs dnsmasq-base)")


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.stop()
