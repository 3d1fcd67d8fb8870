"""The smtp agent in LMTP mode (RFC 2033): next hops, settings, LHLO and the
per-recipient replies after the final dot, against a scripted LMTP server on
a real unix-domain socket (and on loopback TCP), with real queue files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postpy.config.maincf import Config
from postpy.config.params import declared
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest
from postpy.queue import qfile
from postpy.smtp.client import Session
from postpy.smtp.delivery import Agent
from postpy.smtp.dns import DestinationResolver, Target
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.lmtp import LmtpDestinations, split_nexthop
from postpy.smtp.message import OutMessage, OutRcpt
from postpy.smtp.settings import AgentSettings, ClientSettings, Timeouts, load_settings, param_name
from postpy.smtp.tls import make_policy
from postpy.util import maillog

CONTENT = b"Subject: lmtp\n\nhello\n"
FEATURES = ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@dataclass
class Lmtp:
    """A scripted LMTP server; ``finals`` maps a recipient to its reply after the dot."""

    path: str
    name: str = "client.example"            # the same name as ours: no loop in LMTP
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    lhlo: str = ""                          # a non-2xx reply to LHLO
    rcpt: dict[str, str] = field(default_factory=dict)
    data: str = "354 OK"
    finals: dict[str, str] = field(default_factory=dict)
    drop_after_finals: int | None = None    # close after this many replies after the dot
    silent: bool = False                    # ... or stay silent instead of closing
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> Lmtp:
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        say(f"220 {self.name} LMTP ready")
        accepted: list[str] = []
        try:
            while raw := await reader.readline():
                line = raw.decode().rstrip("\r\n")
                self.commands.append(line)
                verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "LHLO" and not self.lhlo:
                    lines = [self.name, *self.features]
                    say("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}"
                                    for i, t in enumerate(lines)))
                elif verb == "LHLO":
                    say(self.lhlo)
                elif verb == "RCPT":
                    address = line[line.find("<") + 1:line.find(">")]
                    reply = self.rcpt.get(address, "250 2.1.5 OK")
                    if reply.startswith("2"):
                        accepted.append(address)
                    say(reply)
                elif verb == "DATA":
                    say(self.data)
                    if not self.data.startswith("354"):
                        continue
                    content = bytearray()
                    while (raw := await reader.readline()) not in (b".\r\n", b""):
                        content += raw
                    self.messages.append(bytes(content))
                    for n, address in enumerate(accepted):
                        if self.drop_after_finals is not None and n >= self.drop_after_finals:
                            await writer.drain()
                            if self.silent:
                                await reader.read()      # until the client gives up
                            writer.close()
                            return
                        say(self.finals.get(address, f"250 2.0.0 <{address}> Saved"))
                    accepted = []
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    break
                else:
                    say("250 2.0.0 OK")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def settings(**timeouts: float) -> ClientSettings:
    return ClientSettings(helo_name="client.example", myhostname="client.example",
                          tls=make_policy("none"), timeouts=Timeouts(**timeouts), lmtp=True)


def message(*rcpts: str) -> OutMessage:
    return OutMessage(sender="alice@example.com", recipients=[OutRcpt(r) for r in rcpts],
                      size=len(CONTENT), chunks=lambda: [CONTENT])


def unix_target(path: Path) -> Target:
    return Target(str(path), str(path), 0, unix=True)


# -- next hops ---------------------------------------------------------------------

@pytest.mark.parametrize("nexthop, hops", [
    ("unix:/run/dovecot/lmtp", [("unix", "/run/dovecot/lmtp")]),
    ("unix:private/dovecot-lmtp", [("unix", "private/dovecot-lmtp")]),
    ("inet:mail.example:2003", [("inet", "[mail.example]:2003")]),
    ("inet:[::1]:24", [("inet", "[::1]:24")]),
    ("inet:127.0.0.1", [("inet", "[127.0.0.1]")]),
    ("[127.0.0.1]:2400", [("inet", "[127.0.0.1]:2400")]),
    ("mail.example:2400", [("inet", "[mail.example]:2400")]),
    ("mail.example", [("inet", "[mail.example]")]),
    ("unix:/a, inet:b:25", [("unix", "/a"), ("inet", "[b]:25")]),
])
def test_nexthop_forms(nexthop: str, hops: list[tuple[str, str]]) -> None:
    assert split_nexthop(nexthop) == hops


@pytest.mark.parametrize("nexthop", ["", "unix:", "inet:", "::1", "inet:::1", ":24"])
def test_malformed_nexthop_defers_as_configuration_error(nexthop: str) -> None:
    with pytest.raises(DeliveryFailure) as info:
        split_nexthop(nexthop)
    assert info.value.dsn == "4.3.5" and not info.value.permanent
    assert "configuration error" in info.value.text


def test_targets_never_look_up_mx() -> None:
    hosts = DestinationResolver(resolver=None, lookup=("native",))  # type: ignore[arg-type]
    found = run(LmtpDestinations(hosts).targets(
        "unix:private/dovecot-lmtp inet:[127.0.0.1]:2400 localhost", 24))
    assert found[0] == Target("private/dovecot-lmtp", "private/dovecot-lmtp", 0, unix=True)
    assert found[0].relay == "private/dovecot-lmtp[private/dovecot-lmtp]"
    assert found[1].relay == "127.0.0.1[127.0.0.1]:2400"
    assert {t.host for t in found[2:]} == {"localhost"} and {t.port for t in found[2:]} == {24}


# -- settings ----------------------------------------------------------------------

def test_lmtp_reads_its_own_parameters(tmp_path: Path) -> None:
    assert param_name("smtp_helo_timeout", "lmtp") == "lmtp_lhlo_timeout"
    assert param_name("smtp_helo_name", "lmtp") == "lmtp_lhlo_name"
    assert param_name("smtp_data_done_timeout", "lmtp") == "lmtp_data_done_timeout"
    assert param_name("smtp_data_done_timeout") == "smtp_data_done_timeout"
    cfg = Config(str(tmp_path))
    cfg.explicit.update({"lmtp_lhlo_timeout": "7s", "lmtp_data_done_timeout": "9s",
                         "smtp_data_done_timeout": "1s", "myhostname": "mx.example",
                         "lmtp_destination_concurrency_limit": "3"})
    lmtp = load_settings(cfg, "lmtp")
    assert lmtp.client.lmtp and lmtp.default_port == 24 and lmtp.destination_limit == 3
    assert lmtp.client.timeouts.helo == 7 and lmtp.client.timeouts.data_done == 9
    assert lmtp.client.tls.context is None          # no STARTTLS unless asked for
    smtp = load_settings(cfg, "smtp")
    assert not smtp.client.lmtp and smtp.default_port == 25 and smtp.client.timeouts.data_done == 1
    for name in ("smtp_connection_cache_on_demand", "smtp_mx_session_limit", "smtp_host_lookup",
                 "smtp_dns_timeout", "smtp_tls_CAfile", "lmtp_destination_recipient_limit"):
        assert declared(param_name(name, "lmtp")) is not None, name


# -- the session -------------------------------------------------------------------

def test_one_reply_per_recipient_after_the_dot(tmp_path: Path) -> None:
    async def go() -> None:
        peer = await Lmtp(str(tmp_path / "lmtp"), rcpt={"nobody@v.test": "550 5.1.1 <nobody@v.test> User doesn't exist"},
                          finals={"full@v.test": "552 5.2.2 <full@v.test> Quota exceeded (mailbox for user is full)",
                                  "busy@v.test": "451 4.2.0 <busy@v.test> Temporary failure"}).start()
        session = await Session.open(unix_target(tmp_path / "lmtp"), settings(), "unix:lmtp")
        outcomes = await session.send_message(
            message("ok@v.test", "nobody@v.test", "full@v.test", "busy@v.test"))
        await session.quit()
        peer.close()
        assert [(o.status, o.dsn) for o in outcomes] == [
            ("sent", "2.0.0"), ("bounced", "5.1.1"), ("bounced", "5.2.2"), ("deferred", "4.2.0")]
        where = f"host {tmp_path}/lmtp[{tmp_path}/lmtp] said:"
        assert outcomes[0].text == "250 2.0.0 <ok@v.test> Saved"
        assert outcomes[1].text == f"{where} 550 5.1.1 <nobody@v.test> User doesn't exist (in reply to RCPT TO command)"
        assert outcomes[2].text == (f"{where} 552 5.2.2 <full@v.test> Quota exceeded (mailbox for user is full) "
                                    "(in reply to end of DATA command)")
        assert peer.commands[0] == "LHLO client.example"
        assert peer.commands[1].startswith("MAIL FROM:<alice@example.com>")
        assert peer.commands[-1] == "QUIT" and "EHLO" not in " ".join(peer.commands)
        assert peer.messages == [CONTENT.replace(b"\n", b"\r\n")]
    run(go())


def test_lost_connection_among_the_replies_defers_only_the_rest(tmp_path: Path) -> None:
    async def go() -> None:
        peer = await Lmtp(str(tmp_path / "lmtp"), drop_after_finals=1).start()
        session = await Session.open(unix_target(tmp_path / "lmtp"), settings(), "unix:lmtp")
        outcomes = await session.send_message(message("a@v.test", "b@v.test", "c@v.test"))
        peer.close()
        assert [o.status for o in outcomes] == ["sent", "deferred", "deferred"]
        assert outcomes[1].text.startswith(f"lost connection with {tmp_path}/lmtp[{tmp_path}/lmtp] "
                                           "while sending end of data")
        assert not session.alive
    run(go())


def test_missing_reply_times_out_per_recipient(tmp_path: Path) -> None:
    async def go() -> None:
        peer = await Lmtp(str(tmp_path / "lmtp"), drop_after_finals=1, silent=True).start()
        session = await Session.open(unix_target(tmp_path / "lmtp"), settings(data_done=0.5), "unix:lmtp")
        outcomes = await session.send_message(message("a@v.test", "b@v.test"))
        session.close()
        peer.close()
        assert [o.status for o in outcomes] == ["sent", "deferred"]
        assert outcomes[1].text == (f"conversation with {tmp_path}/lmtp[{tmp_path}/lmtp] timed out while "
                                    "sending end of data -- message may be sent more than once")
    run(go())


def test_own_hostname_in_the_lhlo_reply_is_no_loop_and_lhlo_failure_moves_on(tmp_path: Path) -> None:
    async def go() -> None:
        peer = await Lmtp(str(tmp_path / "a"), name="client.example").start()
        session = await Session.open(unix_target(tmp_path / "a"), settings(), "unix:a")
        assert session.features.pipelining and session.features.enhancedstatuscodes
        await session.quit()
        peer.close()
        bad = await Lmtp(str(tmp_path / "b"), lhlo="500 5.5.1 Unknown command").start()
        with pytest.raises(DeliveryFailure) as info:
            await Session.open(unix_target(tmp_path / "b"), settings(), "unix:b")
        bad.close()
        assert info.value.next_host and info.value.dsn == "5.5.1"
        assert info.value.text.endswith("(in reply to LHLO command)")
        assert not any(c.startswith("HELO") for c in bad.commands)
    run(go())


def test_data_accepted_without_recipients_drops_the_connection(tmp_path: Path) -> None:
    async def go() -> None:
        peer = await Lmtp(str(tmp_path / "lmtp"), rcpt={"x@v.test": "550 5.1.1 no"}).start()
        session = await Session.open(unix_target(tmp_path / "lmtp"), settings(), "unix:lmtp")
        outcomes = await session.send_message(message("x@v.test"))
        assert [o.status for o in outcomes] == ["bounced"]
        assert not session.alive and peer.messages == []
        session.close()
        peer.close()
    run(go())


# -- the agent: queue file in, log lines and results out ----------------------------

@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "active").mkdir()
    (tmp_path / "private").mkdir()
    monkeypatch.chdir(tmp_path)
    maillog.setup("lmtp", maillog_file=str(tmp_path / "maillog"), hostname="mx.example")
    return tmp_path


def enqueue(queue: Path, qid: str, nexthop: str, *rcpts: str) -> DeliveryRequest:
    env = qfile.Envelope(sender="alice@example.com", recipients=[qfile.Recipient(r) for r in rcpts],
                         arrival=time.time() - 1)
    qfile.write_queue_file(str(queue / "active"), qid, env, CONTENT, durable=False)
    now = time.time()
    return DeliveryRequest(queue_id=qid, queue_name="active", sender=env.sender, nexthop=nexthop,
                           recipients=[DeliveryRcpt(i, r) for i, r in enumerate(rcpts)],
                           arrival=env.arrival, active_time=now, dispatch_time=now, transport="lmtp")


def lmtp_agent() -> Agent:
    hosts = DestinationResolver(resolver=None, lookup=("native",))  # type: ignore[arg-type]
    return Agent(AgentSettings(client=settings(helo=2, data_done=2), default_port=24),
                 LmtpDestinations(hosts))


def test_agent_logs_each_recipient_and_reuses_the_connection(queue: Path) -> None:
    async def go() -> None:
        peer = await Lmtp("private/dovecot-lmtp",
                          finals={"full@v.test": "452 4.2.2 <full@v.test> Quota exceeded"}).start()
        agent = lmtp_agent()
        first = await agent.deliver(enqueue(queue, "1A1A1A1A1A", "unix:private/dovecot-lmtp",
                                            "ok@v.test", "full@v.test"))
        second = await agent.deliver(enqueue(queue, "2B2B2B2B2B", "unix:private/dovecot-lmtp",
                                             "ok@v.test"))
        agent.cache.close_all()
        peer.close()
        assert [(r.status, r.dsn) for r in first.results] == [("sent", "2.0.0"), ("deferred", "4.2.2")]
        assert [r.status for r in second.results] == ["sent"]
        assert peer.connections == 1 and len(peer.messages) == 2
    run(go())
    log = (queue / "maillog").read_text()
    assert "1A1A1A1A1A: to=<ok@v.test>, relay=private/dovecot-lmtp[private/dovecot-lmtp], delay=" in log
    assert "dsn=2.0.0, status=sent (250 2.0.0 <ok@v.test> Saved)" in log
    assert ("1A1A1A1A1A: to=<full@v.test>, relay=private/dovecot-lmtp[private/dovecot-lmtp], " in log
            and "dsn=4.2.2, status=deferred (host private/dovecot-lmtp[private/dovecot-lmtp] said: "
                "452 4.2.2 <full@v.test> Quota exceeded (in reply to end of DATA command))" in log)
    assert "2B2B2B2B2B: to=<ok@v.test>, relay=private/dovecot-lmtp[private/dovecot-lmtp], conn_use=2," in log


def test_agent_defers_when_no_server_listens(queue: Path) -> None:
    async def go() -> list[tuple[str, str, str]]:
        agent = lmtp_agent()
        result = await agent.deliver(enqueue(queue, "3C3C3C3C3C", "unix:private/nothing", "a@v.test"))
        return [(r.status, r.dsn, r.text) for r in result.results]
    assert run(go()) == [("deferred", "4.4.1", "connect to private/nothing[private/nothing]: "
                          "No such file or directory")]
    assert ("relay=none, delay=" in (queue / "maillog").read_text())


def test_enhanced_code_on_the_last_line_only() -> None:
    """Cyrus lmtpd's unknown user: the enhanced code comes on the last line."""
    from postpy.smtp.reply import Reply

    cyrus = Reply(550, ["Mailbox unknown.  Either there is no mailbox associated with this",
                        "name or you do not have authorization to see it.", "5.1.1 User unknown"])
    assert cyrus.dsn == "5.1.1"
    assert Reply(550, ["5.7.1 first", "5.1.1 last"]).dsn == "5.7.1"
    assert Reply(550, ["no code", "4.1.1 wrong class"]).dsn == "5.0.0"
