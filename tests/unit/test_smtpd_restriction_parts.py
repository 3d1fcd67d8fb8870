"""The pure parts of smtpd's restrictions: access keys and results, DNS list
filters, policy protocol framing, host name checks, DSN adjustment."""

from __future__ import annotations

import pytest

from postpy.smtpd import access, builtin_checks, dnsbl, policy
from postpy.smtpd.verdict import DEFER_IF_PERMIT, PERMIT, REJECT, Subject, adjust_dsn

RCPT = Subject("a@b.example", "Recipient address", "recipient")
CLIENT = Subject("unknown[192.0.2.7]", "Client host", "client")


def test_keys() -> None:
    assert access.address_prefixes("192.0.2.7") == ["192.0.2.7", "192.0.2", "192.0", "192"]
    assert access.address_prefixes("2001:db8::1")[:2] == ["2001:db8::1", "2001:db8"]
    assert access.parent_keys("a.b.c", True) == ["a.b.c", "b.c", "c"]
    assert access.parent_keys("a.b.c", False) == ["a.b.c", ".b.c", ".c"]
    assert access.mail_keys("User+x@Sub.Example", "+", True, "<>") == [
        "user+x@Sub.Example", "user@Sub.Example", "sub.example", "example", "user+x@", "user@"]
    assert access.mail_keys("", "+", True, "<>") == ["<>"]
    assert access.host_keys("unknown", "10.1.2.3", True) == ["10.1.2.3", "10.1.2", "10.1", "10"]


@pytest.mark.parametrize(("value", "kind", "reply"), [
    ("OK", PERMIT, None),
    ("1234", PERMIT, None),
    ("REJECT", REJECT, "554 5.7.1 <a@b.example>: Recipient address rejected: Access denied"),
    ("REJECT 5.1.1 gone", REJECT, "554 5.1.1 <a@b.example>: Recipient address rejected: gone"),
    ("DEFER later", REJECT, "450 4.7.1 <a@b.example>: Recipient address rejected: later"),
    ("550 5.7.2 no", REJECT, "550 5.7.2 <a@b.example>: Recipient address rejected: no"),
    ("DEFER_IF_PERMIT 4.2.0 grey", DEFER_IF_PERMIT, "450 4.2.0 <a@b.example>: Recipient address rejected: grey"),
])
def test_interpret(value: str, kind: str, reply: str | None) -> None:
    result = access.interpret(value, RCPT, access.Codes(), lambda w: False)
    assert result.outcome.kind == kind
    assert (str(result.outcome.reply) if result.outcome.reply else None) == reply


def test_interpret_actions_and_errors() -> None:
    known = {"permit", "strict"}.__contains__
    assert access.interpret("HOLD", CLIENT, access.Codes(), known).actions.hold
    assert access.interpret("PREPEND X-A: b", CLIENT, access.Codes(), known).actions.prepend == ["X-A: b"]
    assert access.interpret("strict", CLIENT, access.Codes(), known).restrictions == ["strict"]
    assert access.interpret("521 bye", CLIENT, access.Codes(), known).outcome.disconnect
    for bad in ("FILTER nocolon", "REDIRECT nobody", "PREPEND no colon", "whatever", ""):
        assert access.interpret(bad, CLIENT, access.Codes(), known).error, bad


def test_dsn_adjustment() -> None:
    assert adjust_dsn("5.1.1", Subject("s", "Sender address", "sender")) == "5.1.7"
    assert adjust_dsn("5.1.8", RCPT) == "5.1.2"
    assert adjust_dsn("4.1.1", CLIENT) == "4.0.0"
    assert adjust_dsn("5.7.1", CLIENT) == "5.7.1"


def test_list_filters() -> None:
    spec = dnsbl.ListSpec.parse("bl.example=127.0.[2;4..6].1")
    assert spec.matches("127.0.5.1") and not spec.matches("127.0.3.1")
    assert dnsbl.ListSpec.parse("bl.example").matches("127.0.0.9")
    for bad in ("=127.0.0.2", "bl.example=127.0.0", "bl.example=1.2.3.x"):
        with pytest.raises(dnsbl.FilterError):
            dnsbl.ListSpec.parse(bad)
    assert dnsbl.client_query("192.0.2.7", "bl.example") == "7.2.0.192.bl.example"


def test_policy_framing() -> None:
    request = policy.encode({"request": "smtpd_access_policy", "sender": "a\nb"})
    assert request.endswith(b"\n\n") and b"sender=a b\n" in request
    assert request.count(b"\n") == len(policy.ATTRIBUTES) + 1
    assert policy.parse_answer([b"action=DUNNO\n"]) == "DUNNO"
    for bad in ([b"garbage\n"], [], [b"other=1\n"]):
        with pytest.raises(policy.PolicyError):
            policy.parse_answer(bad)


@pytest.mark.parametrize(("helo", "invalid", "non_fqdn"), [
    ("mail.example.org", False, False), ("nodot", False, True), ("[192.0.2.1]", False, False),
    ("192.0.2.1", False, False), ("bad..name", True, False), ("-x.example", True, False),
    ("under_score.example", False, False), ("[bad]", True, True),
])
def test_helo_names(helo: str, invalid: bool, non_fqdn: bool) -> None:
    assert builtin_checks.invalid_helo(helo) == invalid
    assert builtin_checks.non_fqdn_helo(helo) == non_fqdn
