"""SMTP AUTH as a client (postpy.smtp.sasl_client) and BDAT, against the scripted peer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from test_smtp_peer import Peer, Script

from postpy.smtp.client import Session
from postpy.smtp.dns import Target
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.message import OutMessage, OutRcpt
from postpy.smtp.reply import Features, Reply
from postpy.smtp.sasl_client import (
    SaslConfigError,
    SaslSettings,
    choose_mechanism,
    find_credentials,
    parse_options,
    password_keys,
)
from postpy.smtp.settings import ClientSettings
from postpy.smtp.tls import make_policy

PASSWORD = "S3cret-client-pw"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def sasl(tmp_path: Path, entries: str, **kw: Any) -> SaslSettings:
    table = tmp_path / "sasl_passwd"
    table.write_text(entries)
    return SaslSettings(enable=True, password_maps=[f"texthash:{table}"], **kw)


def test_password_keys_in_postfix_order() -> None:
    assert password_keys("Alice@Example.COM", "smtp.isp.example", 587, "isp.example",
                         sender_dependent=True) == [
        "alice@example.com", "@example.com", "[smtp.isp.example]:587", "[smtp.isp.example]",
        "smtp.isp.example:587", "smtp.isp.example", "isp.example"]
    assert password_keys("a@b.example", "h.example", 25, "", sender_dependent=False)[0] == "[h.example]:25"


def test_find_credentials_and_malformed_values(tmp_path: Path) -> None:
    s = sasl(tmp_path, "[relay.example]:587 user1:pw:with:colons\nbad.example nocolonhere\n")
    creds = find_credentials(s, "a@x.example", "relay.example", 587, "relay.example")
    assert creds is not None and (creds.username, creds.password) == ("user1", "pw:with:colons")
    assert PASSWORD not in repr(creds) and "pw:with" not in repr(creds)
    assert find_credentials(s, "a@x.example", "other.example", 25, "other.example") is None
    with pytest.raises(DeliveryFailure) as info:
        find_credentials(s, "", "bad.example", 25, "bad.example")
    assert info.value.dsn == "4.3.5" and "nocolonhere" not in info.value.text
    s_off = SaslSettings(enable=False, password_maps=s.password_maps)
    assert find_credentials(s_off, "", "relay.example", 587, "") is None


def test_sender_dependent_lookup_comes_first(tmp_path: Path) -> None:
    s = sasl(tmp_path, "alice@a.example alice:1\n@a.example dom:2\n[relay.example]:25 host:3\n",
             sender_dependent=True)
    def user(sender: str) -> str:
        creds = find_credentials(s, sender, "relay.example", 25, "relay.example")
        return creds.username if creds else ""
    assert [user("alice@a.example"), user("bob@a.example"), user("c@c.example")] == ["alice", "dom", "host"]


@pytest.mark.parametrize("offered, encrypted, options, tls_options, filt, want", [
    (("PLAIN", "LOGIN"), False, {"noplaintext", "noanonymous"}, {"noanonymous"}, [], None),
    (("PLAIN", "LOGIN"), True, {"noplaintext", "noanonymous"}, {"noanonymous"}, [], "PLAIN"),
    (("PLAIN", "LOGIN"), True, {"noplaintext", "noanonymous"}, {"noplaintext", "noanonymous"}, [], None),
    (("LOGIN", "PLAIN", "CRAM-MD5"), False, {"noplaintext"}, set(), [], "CRAM-MD5"),
    (("PLAIN", "LOGIN"), True, set(), set(), ["login"], "LOGIN"),
    (("CRAM-MD5", "PLAIN"), True, set(), {"nodictionary"}, [], None),
    (("GSSAPI", "XOAUTH2"), True, set(), set(), [], None),
])
def test_mechanism_choice(offered: tuple[str, ...], encrypted: bool, options: set[str],
                          tls_options: set[str], filt: list[str], want: str | None) -> None:
    s = SaslSettings(enable=True, options=frozenset(options), tls_options=frozenset(tls_options),
                     mechanism_filter=filt)
    mech, why = choose_mechanism(offered, s, encrypted)
    assert mech == want
    assert bool(why) == (want is None)


def test_no_mechanism_reason_names_the_option() -> None:
    _, why = choose_mechanism(("PLAIN", "LOGIN"), SaslSettings(enable=True), False)
    assert why == "PLAIN LOGIN not allowed without TLS by smtp_sasl_security_options = noanonymous, noplaintext"
    with pytest.raises(SaslConfigError):
        parse_options(["noplaintext", "bogus"], "smtp_sasl_security_options")


def test_auth_keyword_forms() -> None:
    feats = Features.from_ehlo(Reply(250, ["peer", "AUTH=LOGIN", "AUTH PLAIN login CRAM-MD5", "CHUNKING"]))
    assert feats.auth == ("LOGIN", "PLAIN", "CRAM-MD5") and feats.chunking


def settings(s: SaslSettings | None) -> ClientSettings:
    return ClientSettings(helo_name="client.example", myhostname="client.example",
                          tls=make_policy("none"), sasl=s)


def message(content: bytes = b"Subject: t\n\n.dot\nline\n") -> OutMessage:
    return OutMessage(sender="alice@example.com", recipients=[OutRcpt("bob@example.org")],
                      size=len(content), chunks=lambda: [content])


async def login(script: Script, s: SaslSettings, sender: str = "alice@example.com") -> tuple[Peer, Any]:
    async with Peer(script) as peer:
        target = Target("relay.example", "127.0.0.1", peer.port)
        try:
            session = await Session.open(target, settings(s), "[relay.example]", sender=sender)
            out: Any = await session.send_message(message())
            await session.quit()
        except DeliveryFailure as exc:
            out = exc
    return peer, out


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_each_mechanism_logs_in(mech: str, tmp_path: Path) -> None:
    s = sasl(tmp_path, f"relay.example alice:{PASSWORD}\n", options=frozenset(), tls_options=frozenset(),
             mechanism_filter=[mech])
    peer, out = run(login(Script(auth=["PLAIN", "LOGIN", "CRAM-MD5"]), s))
    assert [o.status for o in out] == ["sent"]
    cmds = peer.commands
    i = next(n for n, c in enumerate(cmds) if c.startswith("AUTH"))
    if mech == "PLAIN":
        assert base64.b64decode(cmds[i].split()[2]) == f"\0alice\0{PASSWORD}".encode()
    elif mech == "LOGIN":
        assert [base64.b64decode(c).decode() for c in cmds[i + 1:i + 3]] == ["alice", PASSWORD]
    else:
        challenge = base64.b64decode("PDEyMzQ1LjY3ODlAcGVlci5leGFtcGxlPg==")
        digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
        assert base64.b64decode(cmds[i + 1]).decode() == f"alice {digest}"
    assert cmds[i + (1 if mech == "PLAIN" else 2 if mech == "CRAM-MD5" else 3)].startswith("MAIL FROM")


def test_rejected_login_defers_with_the_server_reply(tmp_path: Path) -> None:
    s = sasl(tmp_path, f"relay.example alice:{PASSWORD}\n", options=frozenset({"noanonymous"}))
    script = Script(auth=["PLAIN"], auth_reply="535 5.7.8 Error: authentication failed: bad pw")
    peer, out = run(login(script, s))
    assert isinstance(out, DeliveryFailure) and out.next_host
    assert (out.dsn, out.status) == ("4.7.8", "deferred")
    assert out.text == ("SASL authentication failed; server relay.example[127.0.0.1] said: "
                        "535 5.7.8 Error: authentication failed: bad pw")
    assert not any(c.startswith("MAIL") for c in peer.commands)


def test_plaintext_mechanisms_are_not_used_without_tls(tmp_path: Path, capsys: Any) -> None:
    s = sasl(tmp_path, f"relay.example alice:{PASSWORD}\n")          # default: noplaintext
    peer, out = run(login(Script(auth=["PLAIN", "LOGIN"]), s))
    assert isinstance(out, DeliveryFailure) and out.dsn == "4.7.0"
    assert "cannot authenticate to server relay.example[127.0.0.1]: no mechanism available" in out.text
    assert not any(c.startswith("AUTH") for c in peer.commands)
    assert all(PASSWORD not in c and base64.b64encode(PASSWORD.encode()).decode() not in c
               for c in peer.commands)


def test_no_entry_or_no_auth_offered_sends_without_login(tmp_path: Path) -> None:
    s = sasl(tmp_path, "elsewhere.example u:p\n", options=frozenset())
    peer, out = run(login(Script(auth=["PLAIN"]), s))
    assert [o.status for o in out] == ["sent"] and not any(c.startswith("AUTH") for c in peer.commands)
    s2 = sasl(tmp_path, "relay.example u:p\n", options=frozenset())
    peer, out = run(login(Script(), s2))
    assert [o.status for o in out] == ["sent"] and not any(c.startswith("AUTH") for c in peer.commands)


def test_malformed_entry_defers_without_the_value(tmp_path: Path) -> None:
    s = sasl(tmp_path, f"relay.example {PASSWORD}\n")
    peer, out = run(login(Script(auth=["PLAIN"]), s))
    assert isinstance(out, DeliveryFailure) and out.dsn == "4.3.5" and PASSWORD not in out.text


def test_bdat_when_the_server_offers_chunking() -> None:
    content = b"Subject: t\n\n.dot line\nline two\n" + b"a line of text\n" * 20000 + b"end\n"
    peer_script = Script(features=["PIPELINING", "CHUNKING", "8BITMIME"])

    async def go() -> tuple[Peer, Any]:
        async with Peer(peer_script) as peer:
            session = await Session.open(Target("p", "127.0.0.1", peer.port), settings(None), "x")
            out = await session.send_message(message(content))
            await session.quit()
        return peer, out
    peer, out = run(go())
    assert [o.status for o in out] == ["sent"]
    assert not any(c == "DATA" for c in peer.commands)
    bdat = [c for c in peer.commands if c.startswith("BDAT")]
    assert len(bdat) == 2 and bdat[-1].endswith(" LAST")
    wire = content.replace(b"\n", b"\r\n")
    assert peer.messages == [wire]                   # no dot-stuffing, no final dot
