"""PLAIN and LOGIN server mechanisms and the response decoder."""

from __future__ import annotations

import base64

import pytest

from postpy.sasl import mechanisms
from postpy.sasl.mechanisms import (
    AuthAborted,
    BadResponse,
    Challenge,
    Credentials,
    Login,
    MalformedCredentials,
    Plain,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("text, initial, expected", [
    ("AGFsaWNlAHNlY3JldA==", False, b"\x00alice\x00secret"),
    ("AGFsaWNlAHNlY3JldA", False, b"\x00alice\x00secret"),       # padding dropped
    ("  AGFsaWNlAHNlY3JldA==  ", True, b"\x00alice\x00secret"),
    ("=", True, b""),
    ("=", False, b""),
    ("", False, b""),
    ("dXNlcg==", True, b"user"),
])
def test_decode_response(text: str, initial: bool, expected: bytes) -> None:
    assert mechanisms.decode_response(text, initial=initial) == expected


@pytest.mark.parametrize("text", ["not base64!", "AGFs aWNl", "A", "====", "ä", "YQ=x"])
def test_decode_response_rejects_bad_base64(text: str) -> None:
    with pytest.raises(BadResponse) as info:
        mechanisms.decode_response(text)
    assert text.strip() not in str(info.value) or not text.strip()


@pytest.mark.parametrize("initial", [True, False])
def test_star_aborts(initial: bool) -> None:
    with pytest.raises(AuthAborted):
        mechanisms.decode_response(" * ", initial=initial)


@pytest.mark.parametrize("message, expected", [
    (b"\x00alice\x00secret", Credentials("alice", "secret", "")),
    (b"alice\x00alice\x00secret", Credentials("alice", "secret", "alice")),
    (b"admin\x00alice\x00s e c r e t", Credentials("alice", "s e c r e t", "admin")),
    ("\x00jörg\x00pässword".encode(), Credentials("jörg", "pässword", "")),
])
def test_plain_initial_response(message: bytes, expected: Credentials) -> None:
    assert Plain().start(message) == expected


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    mech = Plain()
    assert mech.start(None) == Challenge(b"")
    assert mech.step(b"\x00bob\x00pw") == Credentials("bob", "pw")


@pytest.mark.parametrize("message", [
    b"",                              # nothing
    b"alice\x00secret",               # one NUL
    b"\x00alice\x00secret\x00x",      # three NULs
    b"\x00\x00secret",                # empty authcid
    b"\x00alice\x00",                 # empty password
    b"\x00\xff\xfe\x00secret",        # not UTF-8
    b"\x00" + b"a" * 256 + b"\x00pw",  # authcid too long (RFC 4616: 255 octets)
])
def test_plain_malformed(message: bytes) -> None:
    with pytest.raises(MalformedCredentials) as info:
        Plain().start(message)
    assert "secret" not in str(info.value)


def test_login_dialogue() -> None:
    mech = Login()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.step(b"alice") == Challenge(b"Password:")
    assert mech.step(b"secret") == Credentials("alice", "secret")


def test_login_initial_response_is_username() -> None:
    mech = Login()
    assert mech.start(b"alice") == Challenge(b"Password:")
    assert mech.step(b"secret") == Credentials("alice", "secret")


@pytest.mark.parametrize("answers", [[b""], [b"alice", b""], [b"\xff"], [b"a\x00b"]])
def test_login_malformed(answers: list[bytes]) -> None:
    mech = Login()
    mech.start(None)
    with pytest.raises(MalformedCredentials):
        for answer in answers:
            mech.step(answer)


def test_password_not_in_repr() -> None:
    assert "secret" not in repr(Credentials("alice", "secret"))


@pytest.mark.parametrize("name, cls", [("plain", Plain), ("LOGIN", Login), ("Plain", Plain)])
def test_new_mechanism(name: str, cls: type) -> None:
    assert isinstance(mechanisms.new_mechanism(name), cls)


@pytest.mark.parametrize("name", ["CRAM-MD5", "XOAUTH2", "", "PLAIN2"])
def test_unknown_mechanism(name: str) -> None:
    assert mechanisms.new_mechanism(name) is None


def test_encode_challenge() -> None:
    assert mechanisms.encode_challenge(b"Username:") == "VXNlcm5hbWU6"
    assert mechanisms.encode_challenge(b"") == ""
    assert b64(b"Password:") == mechanisms.encode_challenge(b"Password:")
