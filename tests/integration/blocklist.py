"""A real DNS blocklist on loopback: rbldnsd (Debian package rbldnsd) behind dnsmasq.

:class:`Blocklists` starts ``rbldnsd`` in the foreground on 127.0.0.1:<free
port> in a temporary directory, serving:

- ``bl.test`` (ip4set): 127.0.0.2 and 127.0.0.9 -> 127.0.0.2 with a TXT
  reason, 127.0.0.8 -> 127.0.0.3 (listed, but not for ``bl.test=127.0.0.2``);
- ``wl.test`` (ip4set): 127.0.0.30 (an allowlist);
- ``rhs.test`` (dnset): ``spammer.test`` (a domain list).

:func:`dnsmasq_lines` gives the lines that make the tests' dnsmasq
(:class:`dnsserver.DnsServer`) forward those zones to it, and ``dead.test``
(and any other zone given) to :class:`Silent`, a UDP socket that never
answers: a blocklist that times out.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import dns.exception
import dns.resolver
import peer_process
from conftest import free_port, wait_for

RBLDNSD = shutil.which("rbldnsd") or ("/usr/sbin/rbldnsd" if os.access("/usr/sbin/rbldnsd", os.X_OK)
                                      else None)

BL = """\
:127.0.0.2:Blocked for testing, see http://bl.test/?$
127.0.0.2
127.0.0.9
127.0.0.30
127.0.0.8 :127.0.0.3:Other list
"""
WL = ":127.0.0.2:allowed\n127.0.0.30\n"
RHS = ":127.0.0.2:Domain listed for testing\nspammer.test\n"


class Silent:
    """A UDP port that takes queries and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class Blocklists:
    def __init__(self) -> None:
        assert RBLDNSD, "rbldnsd is not installed"
        self.dir = Path(tempfile.mkdtemp(prefix="postpy-rbl-"))
        os.chmod(self.dir, 0o755)
        for name, text in (("bl.txt", BL), ("wl.txt", WL), ("rhs.txt", RHS)):
            (self.dir / name).write_text(text)
            os.chmod(self.dir / name, 0o644)
        self.port = free_port()
        self.silent = Silent()
        user = ["-u", "rbldns"] if os.getuid() == 0 else []
        self.proc = subprocess.Popen(
            [RBLDNSD, "-n", *user, "-b", f"127.0.0.1/{self.port}", "-w", str(self.dir), "-t", "1",
             "bl.test:ip4set:bl.txt", "wl.test:ip4set:wl.txt", "rhs.test:dnset:rhs.txt"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is not None or self._answers(), 10, "rbldnsd to answer")
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            raise AssertionError(f"rbldnsd exited: {err}")

    def _answers(self) -> bool:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = ["127.0.0.1"], self.port, 0.3
        try:
            r.resolve("2.0.0.127.bl.test", "A")
            return True
        except dns.exception.DNSException:
            return False

    def dnsmasq_lines(self, silent_zones: tuple[str, ...] = ("dead.test",)) -> list[str]:
        lines = [f"server=/{zone}/127.0.0.1#{self.port}" for zone in ("bl.test", "wl.test", "rhs.test")]
        lines += [f"server=/{zone}/127.0.0.1#{self.silent.port}" for zone in silent_zones]
        return lines

    def stop(self) -> None:
        peer_process.terminate(self.proc)
        self.silent.close()
        shutil.rmtree(self.dir, ignore_errors=True)
