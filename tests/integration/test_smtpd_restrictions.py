"""smtpd restrictions end to end: a real master, a real DNS (dnsmasq, with
rbldnsd serving the blocklists), postgrey and two stand-in policy servers.

One system (module scope) holds every case; each case connects from its own
127.0.0.x address, so the access table can give each address its own
action.  A second system checks ``smtpd_delay_reject = no``,
``smtpd_helo_required`` and an unknown restriction name.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import peer_process
import pytest
from blocklist import RBLDNSD, Blocklists
from conftest import MTA, ensure_system_users, free_port, wait_for
from dnsserver import DNSMASQ, DnsServer

POSTGREY = shutil.which("postgrey") or ("/usr/sbin/postgrey" if os.access("/usr/sbin/postgrey", os.X_OK)
                                        else None)
pytestmark = pytest.mark.skipif(not (DNSMASQ and RBLDNSD and POSTGREY),
                                reason="needs dnsmasq, rbldnsd and postgrey (scripts/test-deps)")

NAMES = [
    "host-record=good.test,127.0.0.5",
    "ptr-record=6.0.0.127.in-addr.arpa,liar.test",
    "host-record=liar.test,127.0.0.66",
    "host-record=spammer.test,127.0.0.40",
    "local=/127.in-addr.arpa/",
]
CLIENTS = """\
127.0.3.10 REJECT go away
127.0.3.11 DEFER
127.0.3.12 DEFER_IF_PERMIT try later
127.0.3.13 DEFER_IF_REJECT soft
127.0.3.14 HOLD
127.0.3.15 DISCARD
127.0.3.16 FILTER smtp:[127.0.0.1]:9
127.0.3.17 PREPEND X-Postpy-Test: prepended
127.0.3.18 REDIRECT someone@nx.test
127.0.3.19 WARN suspicious
127.0.3.20 521 5.7.1 go away now
127.0.3.21 strict
127.0.3.22 bogus_thing here
127.0.3.23 BCC copy@nx.test
127.0.3.24 warn_if_reject reject
127.0.3.25 OK
127.0.3.26 450 4.7.9 slow down
127.0.3.27 deadlist
127.0.2 REJECT prefix blocked
127.0.2.5 DUNNO
"""
CIDR = "127.0.1.0/24 REJECT network blocked\n"
HELOS = "evil.example REJECT no thanks\n"
SENDERS = "spam@aonly.test REJECT\n"
RECIPIENTS = """\
blocked@test.example REJECT
grey@test.example greylist
garbage@test.example garbage
slow@test.example slow
"""


class PolicyStub:
    """A policy server that answers garbage, or never answers."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n\n" in buf:
                    _, buf = buf.split(b"\n\n", 1)
                    if self.answer is not None:
                        conn.sendall(self.answer)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


class Postgrey:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="postpy-postgrey-"))
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        user = ["--user=postgrey", "--group=postgrey"] if os.getuid() == 0 else []
        self.proc = subprocess.Popen(
            [POSTGREY, f"--inet=127.0.0.1:{self.port}", f"--dbdir={self.dir}", "--delay=1",
             "--max-age=1", "--auto-whitelist-clients=0", f"--pidfile={self.dir}/pid", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.proc.poll() is not None or self._listening(), 15, "postgrey to listen")
        assert self.proc.poll() is None, "postgrey exited"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        peer_process.terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[DnsServer, Postgrey, PolicyStub, PolicyStub]]:
    lists = Blocklists()
    dns = DnsServer(NAMES + lists.dnsmasq_lines(("dead.test", "7.0.0.127.in-addr.arpa")))
    grey, garbage, slow = Postgrey(), PolicyStub(b"hello there\n\n"), PolicyStub(None)
    yield dns, grey, garbage, slow
    for peer in (garbage, slow):
        peer.close()
    grey.stop()
    dns.stop()
    lists.stop()


def make_system(params: dict[str, str], tables: dict[str, str]) -> MTA:
    ensure_system_users()
    base = Path(tempfile.mkdtemp(prefix="postpy-test-"))
    os.chmod(base, 0o755)
    (base / "tables").mkdir()
    for name, text in tables.items():
        (base / "tables" / name).write_text(text)
    expanded = {k: v.replace("{tables}", str(base / "tables")) for k, v in params.items()}
    mta = MTA(base, None, expanded)
    return mta.start()


@pytest.fixture(scope="module")
def mx(peers: tuple[DnsServer, Postgrey, PolicyStub, PolicyStub]) -> Iterator[MTA]:
    dns, grey, garbage, slow = peers
    tables = {"clients": CLIENTS, "clients.cidr": CIDR, "helos": HELOS, "senders": SENDERS,
              "recipients": RECIPIENTS, "rbl_replies": "rhs.test $rbl_code 5.7.1 Listed in $rbl_domain: $rbl_what\n"}
    mta = make_system({
        "mynetworks": "127.0.0.1/32",
        "relay_domains": "nx.test",
        "local_recipient_maps": "unix:passwd.byname, inline:{grey=x, garbage=x, slow=x}",
        "dns_resolver_address": dns.address,
        "smtpd_dns_timeout": "1s",
        "smtpd_policy_service_timeout": "1s",
        "smtpd_restriction_classes": "strict, greylist, garbage, slow, deadlist",
        "strict": "reject_unknown_sender_domain, permit",
        "greylist": f"check_policy_service inet:127.0.0.1:{grey.port}",
        "garbage": f"check_policy_service inet:127.0.0.1:{garbage.port}",
        "slow": f"check_policy_service inet:127.0.0.1:{slow.port}",
        "deadlist": "reject_rbl_client dead.test",
        "rbl_reply_maps": "texthash:{tables}/rbl_replies",
        "smtpd_client_restrictions": "permit_mynetworks, check_client_access texthash:{tables}/clients, "
                                     "check_client_access cidr:{tables}/clients.cidr, "
                                     "permit_dnswl_client wl.test, reject_rbl_client bl.test=127.0.0.2, "
                                     "reject_rhsbl_client rhs.test, reject_unknown_reverse_client_hostname, "
                                     "reject_unknown_client_hostname",
        "smtpd_helo_restrictions": "permit_mynetworks, check_helo_access texthash:{tables}/helos, "
                                   "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname, "
                                   "reject_rhsbl_helo rhs.test",
        "smtpd_sender_restrictions": "permit_mynetworks, check_sender_access texthash:{tables}/senders, "
                                     "reject_non_fqdn_sender, reject_unknown_sender_domain, "
                                     "reject_rhsbl_sender rhs.test",
        "smtpd_recipient_restrictions": "check_recipient_access texthash:{tables}/recipients, "
                                        "reject_non_fqdn_recipient, reject_unknown_recipient_domain, "
                                        "reject_unlisted_recipient",
        "smtpd_data_restrictions": "reject_unauth_pipelining",
    }, tables)
    yield mta
    mta.stop()
    shutil.rmtree(mta.base, ignore_errors=True)


def client(mta: MTA, source: str, helo: str = "client.example") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", mta.port, timeout=30, source_address=(source, 0))
    smtp.ehlo(helo)
    return smtp


def rcpt_reply(mta: MTA, source: str, sender: str = "sender@aonly.test",
               rcpt: str = "root@test.example", helo: str = "client.example") -> tuple[int, str]:
    with client(mta, source, helo) as smtp:
        code, text = smtp.mail(sender)
        if code == 250:
            code, text = smtp.rcpt(rcpt)
        return code, text.decode()


def send(mta: MTA, source: str, rcpt: str = "root@test.example", body: str = "hello\n") -> str:
    """Send one message; the queue ID."""
    with client(mta, source) as smtp:
        smtp.mail("sender@aonly.test")
        assert smtp.rcpt(rcpt)[0] == 250
        code, text = smtp.data(f"Subject: test from {source}\n\n{body}")
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


# -- access table results -------------------------------------------------------------------

REFUSALS = [
    ("127.0.3.10", 554, "5.7.1 <localhost[127.0.3.10]>: Client host rejected: go away"),
    ("127.0.3.11", 450, "4.7.1 <localhost[127.0.3.11]>: Client host rejected: Access denied"),
    ("127.0.3.12", 450, "4.7.1 <localhost[127.0.3.12]>: Client host rejected: try later"),
    ("127.0.3.22", 451, "4.3.5 Server configuration error"),
    ("127.0.3.26", 450, "4.7.9 <localhost[127.0.3.26]>: Client host rejected: slow down"),
    ("127.0.1.7", 554, "5.7.1 <localhost[127.0.1.7]>: Client host rejected: network blocked"),
    ("127.0.2.1", 554, "5.7.1 <localhost[127.0.2.1]>: Client host rejected: prefix blocked"),
    ("127.0.0.2", 554, "5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; "
                       "Blocked for testing, see http://bl.test/?127.0.0.2"),
    ("127.0.0.40", 554, "5.7.1 Listed in rhs.test: spammer.test"),
    ("127.0.0.6", 450, "4.7.25 Client host rejected: cannot find your hostname, [127.0.0.6]"),
    ("127.0.0.7", 450, "4.7.25 Client host rejected: cannot find your reverse hostname, [127.0.0.7]"),
]


def test_client_restrictions_refuse_at_rcpt(mx: MTA) -> None:
    for source, code, text in REFUSALS:
        assert rcpt_reply(mx, source) == (code, text), source
    mx.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.3\.10\]: 554 5\.7\.1 "
                r"<localhost\[127\.0\.3\.10\]>: Client host rejected: go away; "
                r"from=<sender@aonly\.test> to=<root@test\.example> proto=ESMTP helo=<client\.example>")
    mx.wait_log(r'warning: access table texthash:\S+/clients: unknown action "bogus_thing here"')
    mx.wait_log(r"connect from liar\.test|connect from unknown\[127\.0\.0\.6\]")


def test_clients_that_pass(mx: MTA) -> None:
    # DUNNO exempts a host from its network's entry; OK permits; a listed address
    # with another answer than the filter asks for passes; an allowlisted one too;
    # a client whose name maps back to it; a blocklist that times out stops nothing.
    for source in ("127.0.2.5", "127.0.3.25", "127.0.0.8", "127.0.0.30", "127.0.0.5"):
        assert rcpt_reply(mx, source)[0] == 250, source
    mx.wait_log(r"connect from good\.test\[127\.0\.0\.5\]")
    started = time.monotonic()
    assert rcpt_reply(mx, "127.0.3.27")[0] == 250
    assert time.monotonic() - started < 10
    mx.wait_log(r"DNS list dead\.test: no answer for 27\.3\.0\.127\.dead\.test")


def test_defer_if_reject_and_warn_if_reject(mx: MTA) -> None:
    with client(mx, "127.0.3.13") as smtp:
        smtp.mail("sender@aonly.test")
        assert smtp.rcpt("blocked@test.example") == (
            450, b"4.7.1 <localhost[127.0.3.13]>: Client host rejected: soft")
        assert smtp.rcpt("root@test.example")[0] == 250
    assert rcpt_reply(mx, "127.0.3.24")[0] == 250
    mx.wait_log(r"NOQUEUE: reject_warning: RCPT from localhost\[127\.0\.3\.24\]: 554 5\.7\.1 "
                r"<localhost\[127\.0\.3\.24\]>: Client host rejected: Access denied;")


def test_restriction_class_and_disconnect(mx: MTA) -> None:
    assert rcpt_reply(mx, "127.0.3.21", sender="a@nx.test") == (
        450, "4.1.8 <a@nx.test>: Sender address rejected: Domain not found")
    assert rcpt_reply(mx, "127.0.3.21")[0] == 250
    with client(mx, "127.0.3.20") as smtp:
        smtp.mail("sender@aonly.test")
        assert smtp.rcpt("root@test.example") == (
            521, b"5.7.1 <localhost[127.0.3.20]>: Client host rejected: go away now")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_message_actions(mx: MTA) -> None:
    held = send(mx, "127.0.3.14")
    wait_for(lambda: held in mx.queue_ids("hold"), 10, "the HOLD message in hold/")
    mx.wait_log(r"NOQUEUE: hold: RCPT from localhost\[127\.0\.3\.14\]: <localhost\[127\.0\.3\.14\]>: "
                r"Client host triggers HOLD action;")
    discarded = send(mx, "127.0.3.15")
    mx.wait_log(r"NOQUEUE: discard: RCPT from localhost\[127\.0\.3\.15\]")
    filtered = send(mx, "127.0.3.16")
    mx.wait_log(rf"{filtered}: to=<root@test\.example>, relay=.*127\.0\.0\.1\]:9", 20)
    prepended = send(mx, "127.0.3.17", body="prepend test\n")
    redirected = send(mx, "127.0.3.18")
    mx.wait_log(rf"{redirected}: to=<someone@nx\.test>", 20)
    copied = send(mx, "127.0.3.23")
    mx.wait_log(rf"{copied}: to=<copy@nx\.test>", 20)
    warned = send(mx, "127.0.3.19")
    mx.wait_log(r"NOQUEUE: warn: RCPT from localhost\[127\.0\.3\.19\]: <localhost\[127\.0\.3\.19\]>: "
                r"Client host suspicious;")
    mailbox = mx.base / "mail" / "root"
    wait_for(lambda: mailbox.exists() and b"prepend test" in mailbox.read_bytes(), 20, "delivery")
    text = mailbox.read_text(errors="replace")
    end = text.index("prepend test")
    block = text[max(text.rfind("\nFrom ", 0, end), 0):end]
    assert "X-Postpy-Test: prepended" in block, block
    assert discarded not in mx.queue_ids("hold") and discarded not in mx.queue_ids("incoming")
    assert f"{discarded}: to=" not in mx.log()
    mx.wait_log(rf"{warned}: to=<root@test\.example>.*status=sent", 20)
    assert prepended


# -- helo, sender, recipient, data ----------------------------------------------------------

def test_helo_sender_recipient_checks(mx: MTA) -> None:
    src = "127.0.0.50"
    assert rcpt_reply(mx, src, helo="bad..name") == (501, "5.5.2 <bad..name>: Helo command rejected: Invalid name")
    assert rcpt_reply(mx, src, helo="nodot") == (
        504, "5.5.2 <nodot>: Helo command rejected: need fully-qualified hostname")
    assert rcpt_reply(mx, src, helo="evil.example") == (
        554, "5.7.1 <evil.example>: Helo command rejected: no thanks")
    assert rcpt_reply(mx, src, helo="spammer.test") == (554, "5.7.1 Listed in rhs.test: spammer.test")
    assert rcpt_reply(mx, src, sender="spam@aonly.test") == (
        554, "5.7.1 <spam@aonly.test>: Sender address rejected: Access denied")
    assert rcpt_reply(mx, src, sender="a@nodot") == (
        504, "5.5.2 <a@nodot>: Sender address rejected: need fully-qualified address")
    assert rcpt_reply(mx, src, sender="a@nx.test") == (
        450, "4.1.8 <a@nx.test>: Sender address rejected: Domain not found")
    assert rcpt_reply(mx, src, sender="a@nullmx.test") == (
        550, "5.7.27 <a@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail (nullMX)")
    assert rcpt_reply(mx, src, sender="a@servfail.test") == (
        450, "4.1.8 <a@servfail.test>: Sender address rejected: Domain not found")
    assert rcpt_reply(mx, src, sender="a@spammer.test") == (554, "5.7.1 Listed in rhs.test: spammer.test")
    assert rcpt_reply(mx, src, rcpt="blocked@test.example") == (
        554, "5.7.1 <blocked@test.example>: Recipient address rejected: Access denied")
    assert rcpt_reply(mx, src, rcpt="root") == (
        504, "5.5.2 <root>: Recipient address rejected: need fully-qualified address")
    assert rcpt_reply(mx, src, rcpt="x@nx.test") == (
        450, "4.1.2 <x@nx.test>: Recipient address rejected: Domain not found")
    assert rcpt_reply(mx, src, rcpt="nosuchuser@test.example") == (
        550, "5.1.1 <nosuchuser@test.example>: Recipient address rejected: User unknown in local recipient table")
    assert rcpt_reply(mx, src, rcpt="x@elsewhere.example") == (
        554, "5.7.1 <x@elsewhere.example>: Relay access denied")
    assert rcpt_reply(mx, src)[0] == 250


def test_unauth_pipelining(mx: MTA) -> None:
    with socket.create_connection(("127.0.0.1", mx.port), timeout=10,
                                  source_address=("127.0.0.51", 0)) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line
        assert reply().startswith(b"220")
        for cmd in (b"EHLO client.example", b"MAIL FROM:<sender@aonly.test>", b"RCPT TO:<root@test.example>"):
            sock.sendall(cmd + b"\r\n")
            assert reply().startswith(b"250"), cmd
        sock.sendall(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        assert reply() == b"503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining\r\n"


# -- policy servers ---------------------------------------------------------------------------

def test_policy_services(mx: MTA) -> None:
    src = "127.0.0.52"
    code, text = rcpt_reply(mx, src, rcpt="grey@test.example")
    assert (code, text.split(",")[0]) == (450, "4.2.0 <grey@test.example>: Recipient address rejected: Greylisted"), text
    deadline = time.monotonic() + 15
    while True:
        time.sleep(1.2)
        code, text = rcpt_reply(mx, src, rcpt="grey@test.example")
        if code == 250 or time.monotonic() > deadline:
            break
    assert code == 250, text
    assert rcpt_reply(mx, src, rcpt="garbage@test.example") == (
        451, "4.3.5 <garbage@test.example>: Recipient address rejected: Server configuration problem")
    started = time.monotonic()
    assert rcpt_reply(mx, src, rcpt="slow@test.example")[0] == 451
    assert time.monotonic() - started < 10
    mx.wait_log(r"warning: problem talking to server inet:127\.0\.0\.1:\d+: malformed answer line")
    mx.wait_log(r"warning: problem talking to server inet:127\.0\.0\.1:\d+: timeout after 1s")


# -- smtpd_delay_reject = no ----------------------------------------------------------------------

def test_no_delay_reject(peers: tuple[DnsServer, Postgrey, PolicyStub, PolicyStub]) -> None:
    dns = peers[0]
    mta = make_system({
        "mynetworks": "127.0.0.1/32", "dns_resolver_address": dns.address,
        "smtpd_delay_reject": "no", "smtpd_helo_required": "yes",
        "smtpd_client_restrictions": "check_client_access texthash:{tables}/clients",
        "smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname",
        "smtpd_sender_restrictions": "check_sender_access texthash:{tables}/senders",
        "smtpd_data_restrictions": "no_such_restriction",
    }, {"clients": "127.0.3.10 REJECT go away\n", "senders": SENDERS})
    try:
        with socket.create_connection(("127.0.0.1", mta.port), timeout=10,
                                      source_address=("127.0.3.10", 0)) as sock:
            f = sock.makefile("rb")
            assert f.readline() == b"554 5.7.1 <localhost[127.0.3.10]>: Client host rejected: go away\r\n"
            sock.sendall(b"EHLO client.example\r\n")
            assert f.readline() == b"503 5.7.0 Error: access denied for localhost[127.0.3.10]\r\n"
            sock.sendall(b"QUIT\r\n")
            assert f.readline().startswith(b"221")
        smtp = smtplib.SMTP("127.0.0.1", mta.port, timeout=30, source_address=("127.0.3.11", 0))
        assert smtp.docmd("MAIL FROM:<sender@aonly.test>") == (503, b"5.5.1 Error: send HELO/EHLO first")
        assert smtp.ehlo("nodot")[0] == 504
        assert smtp.ehlo("good.example")[0] == 250
        assert smtp.mail("spam@aonly.test") == (
            554, b"5.7.1 <spam@aonly.test>: Sender address rejected: Access denied")
        assert smtp.mail("sender@aonly.test")[0] == 250
        assert smtp.rcpt("root@test.example")[0] == 250
        assert smtp.docmd("DATA") == (451, b"4.3.5 Server configuration error")
        smtp.quit()
        mta.wait_log(r'warning: unknown smtpd restriction: "no_such_restriction"')
        mta.wait_log(r"NOQUEUE: reject: CONNECT from localhost\[127\.0\.3\.10\]: 554 5\.7\.1")
    finally:
        mta.stop()
        shutil.rmtree(mta.base, ignore_errors=True)
