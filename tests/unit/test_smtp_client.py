"""The SMTP client session (postpy.smtp.client) against a scripted peer on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from test_smtp_peer import Peer, Script, make_cert, peer_cert, server_context  # noqa: F401

from postpy.smtp.client import Session, TlsFallback
from postpy.smtp.dns import Target
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.message import Outcome, OutMessage, OutRcpt
from postpy.smtp.settings import ClientSettings, Timeouts
from postpy.smtp.tls import TlsConfigError, make_policy

CONTENT = b"Subject: test\n\n.leading dot\nline\n.\n"
WIRE = b"Subject: test\r\n\r\n..leading dot\r\nline\r\n..\r\n.\r\n"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def settings(level: str = "none", cafile: str = "", **timeouts: float) -> ClientSettings:
    return ClientSettings(helo_name="client.example", myhostname="client.example",
                          tls=make_policy(level, cafile), timeouts=Timeouts(**timeouts))


def message(*rcpts: str, content: bytes = CONTENT, **kw: Any) -> OutMessage:
    recipients = [OutRcpt(r) for r in (rcpts or ("bob@example.org",))]
    return OutMessage(sender=kw.pop("sender", "alice@example.com"), recipients=recipients,
                      size=len(content), chunks=lambda: [content[:7], content[7:]], **kw)


async def deliver(peer: Peer, msg: OutMessage, cs: ClientSettings | None = None,
                  host: str = "peer.example") -> tuple[list[Any], Session]:
    target = Target(host, "127.0.0.1", peer.port)
    session = await Session.open(target, cs or settings(), "example.org")
    outcomes = await session.send_message(msg)
    return outcomes, session


def test_pipelined_transaction_with_extensions() -> None:
    async def go() -> None:
        async with Peer() as peer:
            msg = message("bob@example.org", "carol@example.org", eightbit=True, envid="ID+1", ret="HDRS")
            msg.recipients[0].notify = "SUCCESS,FAILURE"
            msg.recipients[0].orcpt = "rfc822;Bob@Example.org"
            outcomes, session = await deliver(peer, msg)
            await session.quit()
        assert [o.status for o in outcomes] == ["sent", "sent"]
        assert outcomes[0].text == "250 2.0.0 Ok: queued as PEER1" and outcomes[0].dsn == "2.0.0"
        cmds = peer.commands
        assert cmds[0] == "EHLO client.example"
        assert cmds[1] == f"MAIL FROM:<alice@example.com> SIZE={len(CONTENT)} BODY=8BITMIME RET=HDRS ENVID=ID+2B1"
        assert cmds[2] == "RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Example.org"
        assert cmds[3] == "RCPT TO:<carol@example.org>"
        assert cmds[4:] == ["DATA", "QUIT"]
        assert peer.messages == [WIRE]
    run(go())


def test_lockstep_without_pipelining_or_esmtp() -> None:
    async def go() -> None:
        async with Peer(Script(features=None)) as peer:
            outcomes, _ = await deliver(peer, message(eightbit=True, envid="x"))
        assert [o.status for o in outcomes] == ["sent"]
        # EHLO refused -> HELO; then no ESMTP parameters at all
        assert peer.commands[:4] == ["EHLO client.example", "HELO client.example",
                                     "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.org>"]
        assert peer.messages == [WIRE]
    run(go())


def test_per_recipient_outcomes_carry_the_server_text() -> None:
    script = Script(rcpt={"gone@example.org": "550 5.1.1 <gone@example.org>: User unknown",
                          "busy@example.org": "452 4.2.2 Mailbox full"})
    async def go() -> None:
        async with Peer(script) as peer:
            outcomes, _ = await deliver(peer, message("ok@example.org", "gone@example.org", "busy@example.org"))
        ok, gone, busy = outcomes
        assert (ok.status, gone.status, busy.status) == ("sent", "bounced", "deferred")
        assert gone.dsn == "5.1.1"
        assert gone.text == ("host peer.example[127.0.0.1] said: 550 5.1.1 <gone@example.org>: "
                             "User unknown (in reply to RCPT TO command)")
        assert busy.dsn == "4.2.2"
    run(go())


@pytest.mark.parametrize("features", [["PIPELINING"], []], ids=["pipelined", "lockstep"])
def test_no_valid_recipient_sends_no_content_and_keeps_the_session(features: list[str]) -> None:
    script = Script(features=features, rcpt_default="550 5.1.1 no such user",
                    data="554 5.5.1 Error: no valid recipients")
    async def go() -> None:
        async with Peer(script) as peer:
            outcomes, session = await deliver(peer, message("a@x.org", "b@x.org"))
            assert [o.status for o in outcomes] == ["bounced", "bounced"]
            assert "RSET" in peer.commands and not peer.messages
            assert session.alive
            again = await session.send_message(message("c@x.org"))
            assert again[0].status == "bounced"
    run(go())


@pytest.mark.parametrize("final, status, dsn", [
    ("451 4.3.0 Error: queue file write error", "deferred", "4.3.0"),
    ("554 5.7.1 rejected: spam", "bounced", "5.7.1"),
    ("250 Ok", "sent", "2.0.0"),
])
def test_final_reply_decides_for_accepted_recipients(final: str, status: str, dsn: str) -> None:
    script = Script(final=final, rcpt={"no@x.org": "550 5.1.1 unknown"})
    async def go() -> None:
        async with Peer(script) as peer:
            outcomes, _ = await deliver(peer, message("yes@x.org", "no@x.org"))
        assert (outcomes[0].status, outcomes[0].dsn) == (status, dsn)
        assert outcomes[1].status == "bounced"
        if status != "sent":
            assert outcomes[0].text.endswith("(in reply to end of DATA command)")
    run(go())


@pytest.mark.parametrize("mail, status", [("553 5.7.1 sender rejected", "bounced"),
                                          ("451 4.3.0 try later", "deferred")])
def test_mail_from_rejection_applies_to_all(mail: str, status: str) -> None:
    async def go() -> None:
        async with Peer(Script(mail=mail)) as peer:
            outcomes, session = await deliver(peer, message("a@x.org", "b@x.org"))
        assert [o.status for o in outcomes] == [status, status]
        assert outcomes[0].text.endswith("(in reply to MAIL FROM command)")
        assert not peer.messages
    run(go())


def test_size_and_smtputf8_refusals_send_nothing() -> None:
    async def go() -> None:
        async with Peer(Script(features=["SIZE 10", "PIPELINING"])) as peer:
            big, _ = await deliver(peer, message())
            utf8, _ = await deliver(peer, message(content=b"x\n", needs_smtputf8=True))
        assert (big[0].status, big[0].dsn) == ("bounced", "5.3.4")
        assert big[0].text == f"message size {len(CONTENT)} exceeds size limit 10 of server peer.example[127.0.0.1]"
        assert (utf8[0].status, utf8[0].dsn) == ("bounced", "5.6.7")
        assert "SMTPUTF8 is required, but was not offered by host peer.example[127.0.0.1]" == utf8[0].text
        assert not [c for c in peer.commands if c.startswith("MAIL")]
    run(go())


def test_smtputf8_sent_when_offered() -> None:
    async def go() -> None:
        async with Peer() as peer:
            outcomes, _ = await deliver(peer, message("jürgen@example.org", sender="ö@example.com",
                                                      needs_smtputf8=True))
        assert outcomes[0].status == "sent"
        assert "MAIL FROM:<ö@example.com> SIZE=" in peer.commands[1] and peer.commands[1].endswith("SMTPUTF8")
    run(go())


EIGHTBIT = (b"Subject: accents\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: 8bit\n\n.caf\xc3\xa9\nna\xc3\xafve \n")


@pytest.mark.parametrize("convert", [True, False], ids=["converted", "disabled"])
def test_eightbit_to_a_server_without_8bitmime(convert: bool) -> None:
    features = ["PIPELINING", "SIZE 10240000", "DSN"]
    cs = settings()
    cs.mime_output_conversion = convert
    async def go() -> None:
        async with Peer(Script(features=features)) as peer:
            outcomes, _ = await deliver(peer, message(content=EIGHTBIT, eightbit=True), cs)
        assert outcomes[0].status == "sent"
        mail = peer.commands[1]
        assert "BODY=" not in mail
        wire = peer.messages[0]
        if not convert:                 # disable_mime_output_conversion = yes: as is
            assert wire == EIGHTBIT.replace(b"\n", b"\r\n").replace(b"\r\n.c", b"\r\n..c") + b".\r\n"
            return
        assert all(b < 0x80 for b in wire)
        text = wire[:-3].replace(b"\r\n..", b"\r\n.").replace(b"\r\n", b"\n")
        assert mail == f"MAIL FROM:<alice@example.com> SIZE={len(text)}"
        got = email.message_from_bytes(text, policy=email.policy.compat32)
        assert got["Content-Transfer-Encoding"] == "quoted-printable"
        assert got.get_payload(decode=True) == EIGHTBIT.split(b"\n\n", 1)[1]
    run(go())


@pytest.mark.parametrize("greeting, dsn", [("421 4.3.2 busy", "4.3.2"), ("554 5.7.1 go away", "4.7.1")])
def test_bad_greeting_means_try_the_next_host(greeting: str, dsn: str) -> None:
    async def go() -> None:
        async with Peer(Script(greeting=greeting)) as peer:
            with pytest.raises(DeliveryFailure) as info:
                await deliver(peer, message())
        assert info.value.next_host and info.value.dsn == dsn
        assert info.value.text == f"host peer.example[127.0.0.1] refused to talk to me: {greeting}"
    run(go())


def test_connection_refused() -> None:
    async def go() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(DeliveryFailure) as info:
            await Session.open(Target("mx.example", "127.0.0.1", port), settings(), "example.org")
        assert info.value.text == f"connect to mx.example[127.0.0.1]:{port}: Connection refused"
        assert info.value.dsn == "4.4.1" and info.value.next_host
    run(go())


def test_greeting_timeout() -> None:
    async def go() -> None:
        async with Peer(Script(silent_at="GREETING")) as peer:
            with pytest.raises(DeliveryFailure) as info:
                await deliver(peer, message(), settings(helo=0.3))
        assert info.value.text == ("conversation with peer.example[127.0.0.1] timed out while "
                                   "receiving the initial server greeting")
        assert info.value.next_host and not info.value.permanent
    run(go())


def test_no_reply_to_final_dot_defers() -> None:
    async def go() -> None:
        async with Peer(Script(silent_at=".")) as peer:
            outcomes, session = await deliver(peer, message(), settings(data_done=0.3))
        assert outcomes[0].status == "deferred"
        assert outcomes[0].text == ("conversation with peer.example[127.0.0.1] timed out while sending "
                                    "end of data -- message may be sent more than once")
        assert not session.alive
    run(go())


def test_connection_dropped_mid_data_defers() -> None:
    big = b"Subject: big\n\n" + b"x" * 200 + b"\n" + b"y" * 70 + b"\n" * 5000
    async def go() -> None:
        async with Peer(Script(drop_after=100)) as peer:
            outcomes, session = await deliver(peer, message("a@x.org", content=big))
        assert outcomes[0].status == "deferred" and outcomes[0].dsn == "4.4.2"
        assert outcomes[0].text.startswith("lost connection with peer.example[127.0.0.1] while sending")
        assert not session.alive
    run(go())


def test_server_greeting_with_my_own_name_is_a_loop() -> None:
    async def go() -> None:
        async with Peer(Script(name="client.example")) as peer:
            with pytest.raises(DeliveryFailure) as info:
                await deliver(peer, message())
        assert (info.value.dsn, info.value.text) == ("5.4.6", "mail for example.org loops back to myself")
    run(go())


def test_session_reuse_for_several_messages() -> None:
    async def go() -> None:
        async with Peer() as peer:
            first, session = await deliver(peer, message("a@x.org"))
            second = await session.send_message(message("b@x.org"))
            assert session.uses == 2 and session.alive
            await session.quit()
        assert len(peer.sessions) == 1 and len(peer.messages) == 2
        assert first[0].status == second[0].status == "sent"
    run(go())


# -- STARTTLS ---------------------------------------------------------------------

def test_tls_may_encrypts_with_a_self_signed_peer(peer_cert: tuple[Path, Path]) -> None:  # noqa: F811
    async def go() -> None:
        async with Peer(Script(tls=server_context(*peer_cert))) as peer:
            outcomes, session = await deliver(peer, message(), settings("may"))
        assert outcomes[0].status == "sent"
        assert peer.sessions[0].tls and session.tls.startswith("TLSv1.")
        # EHLO again after STARTTLS (RFC 3207 section 4.2)
        assert peer.commands[:3] == ["EHLO client.example", "STARTTLS", "EHLO client.example"]
    run(go())


def test_tls_verify(peer_cert: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    cert, key = peer_cert
    other_ca, _ = make_cert(tmp_path, "other")

    async def verify(cafile: str, host: str) -> list[Outcome] | DeliveryFailure:
        async with Peer(Script(tls=server_context(cert, key))) as peer:
            try:
                return (await deliver(peer, message(), settings("verify", cafile), host=host))[0]
            except DeliveryFailure as exc:
                return exc

    failed = run(verify(str(other_ca), "localhost"))
    assert isinstance(failed, DeliveryFailure)
    assert (failed.dsn, failed.text, failed.next_host) == ("4.7.5", "Server certificate not verified", True)
    good = run(verify(str(cert), "localhost"))
    assert isinstance(good, list) and good[0].status == "sent"
    wrong_name = run(verify(str(cert), "mx.elsewhere.example"))
    assert isinstance(wrong_name, DeliveryFailure) and wrong_name.dsn == "4.7.5"
    with pytest.raises(TlsConfigError):
        settings("verify", str(tmp_path / "missing.pem"))


def test_tls_encrypt_requires_starttls() -> None:
    async def go() -> None:
        async with Peer() as peer:
            with pytest.raises(DeliveryFailure) as info:
                await deliver(peer, message(), settings("encrypt"))
        assert (info.value.dsn, info.value.next_host) == ("4.7.4", True)
        assert info.value.text == "TLS is required, but was not offered by host peer.example[127.0.0.1]"
    run(go())


def test_tls_may_handshake_failure_asks_for_plain_text_retry() -> None:
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)     # no certificate: every handshake fails

    async def go() -> None:
        async with Peer(Script(tls=broken)) as peer:
            with pytest.raises(TlsFallback):
                await deliver(peer, message(), settings("may", starttls=5))
            target = Target("peer.example", "127.0.0.1", peer.port)
            session = await Session.open(target, settings("may"), "example.org", use_tls=False)
            sent = await session.send_message(message())
        assert sent[0].status == "sent" and not peer.sessions[-1].tls
    run(go())


def test_starttls_response_injection_is_refused(peer_cert: tuple[Path, Path]) -> None:  # noqa: F811
    script = Script(tls=server_context(*peer_cert), starttls_extra="\r\n250 2.0.0 injected")

    async def go() -> None:
        async with Peer(script) as peer:
            with pytest.raises(DeliveryFailure) as info:
                await deliver(peer, message(), settings("may"))
        assert info.value.dsn == "4.7.0" and "sent data after its reply to STARTTLS" in info.value.text
    run(go())
