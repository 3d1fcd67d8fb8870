"""Client limits counted by anvil across smtpd processes, anvil going away,
and the pre-greeting test: a real master, real smtpd and anvil processes.

Clients connect from their own 127.0.8.x addresses, so each has its own
counts.  ``smtpd_client_event_limit_exceptions`` is emptied: by default
it is $mynetworks, which holds every loopback address.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
from collections.abc import Callable

from conftest import MTA, free_port, wait_for

ETC_MASTER_CF = (os.path.dirname(__file__) + "/../../etc/master.cf")


def banner(mta: MTA, source: str, port: int = 0) -> tuple[socket.socket, str]:
    sock = socket.create_connection(("127.0.0.1", port or mta.port), timeout=10,
                                    source_address=(source, 0))
    return sock, sock.recv(4096).decode()


def smtp(mta: MTA, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", mta.port, timeout=10, source_address=(source, 0))


def send(mta: MTA, source: str) -> None:
    with smtp(mta, source) as client:
        assert client.sendmail("a@example.org", ["root@mx.test.example"], "Subject: t\r\n\r\nhi\r\n") == {}


def anvil_pid(mta: MTA) -> int:
    pids = [pid for pid, args in mta.children().items() if "anvil" in args]
    return pids[0] if pids else 0


def test_rates_per_client_and_pregreet(mta_factory: Callable[..., MTA]) -> None:
    pregreet_port = free_port()
    master_cf = open(ETC_MASTER_CF).read() + (
        f"127.0.0.1:{pregreet_port} inet n - n - - smtpd\n"
        "  -o smtpd_pregreet_delay=0.3s -o smtpd_pregreet_action=enforce\n")
    mta = mta_factory(master_cf=master_cf, smtpd_client_event_limit_exceptions="",
                      smtpd_client_connection_rate_limit="2", smtpd_client_message_rate_limit="2",
                      smtpd_client_recipient_rate_limit="2")
    service = f"127.0.0.1:{mta.port}"
    # A client over the connection rate gets 421; another client is unaffected.
    held = [banner(mta, "127.0.8.1")[0] for _ in range(2)]
    sock, text = banner(mta, "127.0.8.1")
    assert text == "421 4.7.0 mx.test.example Error: too many connections from 127.0.8.1\r\n"
    assert sock.recv(4096) == b""
    mta.wait_log(r"warning: Connection rate limit exceeded: 3 from \S+\[127\.0\.8\.1\] "
                 rf"for service {re.escape(service)}")
    send(mta, "127.0.8.2")
    for s in [*held, sock]:
        s.close()
    # Message and recipient rates (one connection each, anvil counts across sessions).
    with smtp(mta, "127.0.8.3") as client:
        for _ in range(2):
            assert client.mail("a@example.org")[0] == 250
            client.rset()
        assert client.mail("a@example.org") == (450, b"4.7.1 Error: too much mail from 127.0.8.3")
    with smtp(mta, "127.0.8.4") as client:
        client.mail("a@example.org")
        assert client.rcpt("root@mx.test.example")[0] == 250
        assert client.rcpt("root@mx.test.example")[0] == 250
        assert client.rcpt("root@mx.test.example") == (450, b"4.7.1 Error: too many recipients from 127.0.8.4")
    mta.wait_log(r"warning: Message delivery request rate limit exceeded: 3 from \S+\[127\.0\.8\.3\]")
    mta.wait_log(r"warning: Recipient address rate limit exceeded: 3 from \S+\[127\.0\.8\.4\]")
    # Pre-greeting: a client that talks first is refused; a polite one is served.
    bot = socket.create_connection(("127.0.0.1", pregreet_port), timeout=10, source_address=("127.0.8.5", 0))
    bot.sendall(b"EHLO bot\r\n")
    assert bot.recv(4096).startswith(b"554 5.5.1 ")
    bot.close()
    mta.wait_log(r"postpy/smtpd\[\d+\]: PREGREET 10 after 0\.\d\d from \[127\.0\.8\.5\]:\d+: EHLO bot\\r\\n")
    polite, text = banner(mta, "127.0.8.6", pregreet_port)
    assert text.startswith("220 ")
    polite.close()


def test_connection_count_across_smtpd_processes(mta_factory: Callable[..., MTA]) -> None:
    """smtpd_busy_session_count=1 makes every smtpd process report busy with
    one session, so master starts another for the next connection; stopping
    the first process (SIGSTOP) makes sure it cannot take that connection
    itself.  Only anvil sees both processes' sessions."""
    mta = mta_factory(smtpd_client_event_limit_exceptions="", smtpd_client_connection_count_limit="2",
                      smtpd_busy_session_count="1")
    first, text = banner(mta, "127.0.8.10")
    assert text.startswith("220 ")
    pid1 = int(mta.wait_log(r"postpy/smtpd\[(\d+)\]: connect from \S+\[127\.0\.8\.10\]").group(1))
    os.kill(pid1, signal.SIGSTOP)
    try:
        second, text = banner(mta, "127.0.8.10")
        assert text.startswith("220 ")
        pids = {int(p) for p in re.findall(r"postpy/smtpd\[(\d+)\]: connect from \S+\[127\.0\.8\.10\]",
                                            mta.log())}
        assert len(pids) == 2, "the second session must be in another smtpd process"
        third, text = banner(mta, "127.0.8.10")
        assert text == "421 4.7.0 mx.test.example Error: too many connections from 127.0.8.10\r\n"
        mta.wait_log(r"warning: Connection concurrency limit exceeded: 3 from \S+\[127\.0\.8\.10\]")
    finally:
        os.kill(pid1, signal.SIGCONT)
    first.close()
    third.close()

    def fourth() -> bool:
        """The first process's session is counted off (just after its disconnect line)."""
        sock, text = banner(mta, "127.0.8.10")
        sock.close()
        return text.startswith("220 ")

    wait_for(fourth, 5, "a session once the first one ended")
    second.close()


def test_mail_flows_when_anvil_is_gone(mta_factory: Callable[..., MTA]) -> None:
    mta = mta_factory(smtpd_client_event_limit_exceptions="", smtpd_client_connection_count_limit="5")
    send(mta, "127.0.8.20")
    old = wait_for(lambda: anvil_pid(mta), 10, "anvil to run")
    assert isinstance(old, int)
    # Killed: smtpd reconnects at once and master starts a new anvil.
    os.kill(old, signal.SIGKILL)
    mta.wait_log(rf"process anvil pid {old} killed by signal 9")
    send(mta, "127.0.8.20")
    new = wait_for(lambda: anvil_pid(mta) not in (0, old) and anvil_pid(mta), 10, "a new anvil")
    assert isinstance(new, int)
    # Hung: smtpd gives up after its short timeout, warns once, and takes the mail.
    os.kill(new, signal.SIGSTOP)
    try:
        send(mta, "127.0.8.21")
        mta.wait_log(r"warning: connect to private/anvil service: no reply within 2s; "
                     r"client connection and rate limits are off until it answers")
    finally:
        os.kill(new, signal.SIGCONT)
    assert "too many connections" not in mta.log()
