"""smtpd's client limits against a real anvil table (the harness runs one),
the pre-greeting test and the stress limits: postpy.smtpd.limits,
postpy.smtpd.pregreet, postpy.smtpd.stress."""

from __future__ import annotations

import time
from typing import Any

from test_smtpd_harness import RawClient, greet

pytest_plugins = ["test_smtpd_harness"]   # the smtpd_factory fixture

ADDR = r"\S+\[127\.0\.0\.1\]"


def test_message_rate_limit(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_message_rate_limit="2")
    c = h.connect()
    greet(c)
    for _ in range(2):
        assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
        assert c.cmd("RSET").startswith("250")
    assert c.cmd("MAIL FROM:<a@example.org>") == "450 4.7.1 Error: too much mail from 127.0.0.1"
    h.wait_log(rf"warning: Message delivery request rate limit exceeded: 3 from {ADDR} for service smtpd")
    other = h.connect("127.0.0.2")           # another client has its own rate
    greet(other)
    assert other.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"


def test_recipient_rate_limit_spans_sessions(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_recipient_rate_limit="2")
    c = h.connect()
    greet(c)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<alice@test.example>").startswith("250")
    assert c.cmd("QUIT").startswith("221")
    c = h.connect()
    greet(c)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<bob@test.example>").startswith("250")
    assert c.cmd("RCPT TO:<carol@test.example>") == "450 4.7.1 Error: too many recipients from 127.0.0.1"
    h.wait_log(rf"warning: Recipient address rate limit exceeded: 3 from {ADDR} for service smtpd")


def test_rates_restart_after_the_time_unit(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_connection_rate_limit="1", anvil_rate_time_unit="1s")
    assert h.connect().reply().startswith("220")
    refused = h.connect()
    assert refused.reply() == "421 4.7.0 mx.test.example Error: too many connections from 127.0.0.1"
    assert refused.closed()
    h.wait_log(rf"warning: Connection rate limit exceeded: 2 from {ADDR} for service smtpd")
    time.sleep(1.05)                         # the rate window
    assert h.connect().reply().startswith("220")


def test_exceptions_are_not_counted(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_connection_rate_limit="1",
                      smtpd_client_event_limit_exceptions="127.0.0.1")
    assert all(h.connect().reply().startswith("220") for _ in range(3))
    assert h.anvil.entries == {}


def test_without_anvil_no_limit_applies(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_client_connection_count_limit="1")
    assert h.settings.limits is not None
    h.settings.limits.anvil.path = str(h.tmp / "private" / "nowhere")
    clients = [h.connect() for _ in range(3)]
    assert all(c.reply().startswith("220") for c in clients)
    h.wait_log(r"warning: connect to .*nowhere service: .*limits are off until it answers")
    assert h.log().count("limits are off") == 1


def pregreet_client(h: Any, data: bytes) -> RawClient:
    c = h.connect()
    c.send(data)
    return c


def test_pregreet_enforce(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_pregreet_delay="0.3s", smtpd_pregreet_action="enforce")
    c = pregreet_client(h, b"EHLO bot\r\n")
    assert c.reply() == "554 5.5.1 Error: protocol error: talking before the greeting"
    assert c.closed()
    h.wait_log(r"PREGREET 10 after 0\.\d\d from \[127\.0\.0\.1\]:\d+: EHLO bot\\r\\n")
    started = time.monotonic()
    polite = h.connect()                    # waits for the greeting: served
    greet(polite)
    assert time.monotonic() - started >= 0.29


def test_pregreet_log_keeps_the_commands(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_pregreet_delay="0.3s", smtpd_pregreet_action="log")
    c = pregreet_client(h, b"EHLO bot\r\n")
    assert c.reply().startswith("220 ")
    assert c.reply().startswith("250-mx.test.example")
    h.wait_log(r"PREGREET 10 after .* EHLO bot")


def test_pregreet_ignore_drops_what_came_early(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_pregreet_delay="0.3s")
    c = pregreet_client(h, b"EHLO bot\r\n")
    assert c.reply().startswith("220 ")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"      # the EHLO was dropped: this is the next reply
    h.wait_log(r"PREGREET 10 after")


def test_stress_gives_new_sessions_short_limits(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_busy_session_count="2")
    first = h.connect()
    greet(first)
    second = h.connect()                     # the process now serves 2: stress
    greet(second)
    h.wait_log(r"stress: 2 sessions \(smtpd_busy_session_count = 2\)")
    assert second.cmd("BOGUS").startswith("502")
    assert second.reply() == "421 4.7.0 mx.test.example Error: too many errors"
    assert first.cmd("BOGUS").startswith("502")      # began before stress: 20 errors
    assert first.cmd("NOOP").startswith("250")
    h.wait_log(r"stress over: 1 sessions")
