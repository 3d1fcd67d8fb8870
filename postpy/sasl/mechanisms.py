"""Server side of the SASL mechanisms PLAIN and LOGIN, without I/O.

smtpd's AUTH dialogue (:mod:`postpy.sasl.server`) feeds each client
response, still in base64, to a mechanism object and gets back either a
challenge to send in a ``334`` reply or the :class:`Credentials` the client
presented.  Checking the credentials is a backend's job
(:mod:`postpy.sasl.backend`); a mechanism only decodes.

PLAIN (RFC 4616 section 2): one message ``[authzid] NUL authcid NUL
passwd`` in UTF-8, each part at most 255 octets, authcid and passwd not
empty.  Without an initial response the server sends an empty challenge.

LOGIN (draft-murchison-sasl-login): the server asks ``Username:`` then
``Password:``; an initial response, when a client sends one, is the
username.

Responses (RFC 4954 section 4): a line of base64; ``*`` cancels the
exchange (:class:`AuthAborted`, answered ``501``); an initial response of
``=`` stands for empty data.  Anything that is not base64 (missing
padding is forgiven) raises
:class:`BadResponse` (``501 5.5.2``).  Decoded data that does not fit the
mechanism raises :class:`MalformedCredentials`, which counts as a failed
authentication.  No exception text ever contains the data itself.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

MAX_FIELD = 255             # RFC 4616 section 2: octets per PLAIN field
USERNAME_PROMPT = b"Username:"
PASSWORD_PROMPT = b"Password:"


class AuthAborted(Exception):
    """The client sent ``*``."""


class BadResponse(Exception):
    """A client response that is not base64."""


class MalformedCredentials(Exception):
    """Decoded data that is not a valid message of the mechanism."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)       # never in a repr, a log or a traceback
    authzid: str = ""


@dataclass(frozen=True)
class Challenge:
    data: bytes


Step = Challenge | Credentials


def decode_response(text: str, *, initial: bool = False) -> bytes:
    """The bytes of one client response (initial or continued)."""
    text = text.strip()
    if text == "*":
        raise AuthAborted()
    if text == "=" or (not initial and text == ""):
        return b""
    if len(text) % 4 in (2, 3):
        text += "=" * (4 - len(text) % 4)     # lenient: some clients drop the padding
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadResponse("invalid base64 data") from None


def encode_challenge(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _text(data: bytes, what: str) -> str:
    if len(data) > MAX_FIELD:
        raise MalformedCredentials(f"{what} longer than {MAX_FIELD} octets")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCredentials(f"{what} is not UTF-8") from None
    if "\x00" in text:
        raise MalformedCredentials(f"{what} contains NUL")
    return text


class Mechanism:
    """One exchange; a new object per AUTH command."""

    name = ""

    def start(self, initial: bytes | None) -> Step:
        raise NotImplementedError

    def step(self, response: bytes) -> Step:
        raise NotImplementedError


class Plain(Mechanism):
    name = "PLAIN"

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise MalformedCredentials("PLAIN message needs authzid NUL authcid NUL passwd")
        authzid, username, password = (_text(p, w) for p, w in
                                       zip(parts, ("authzid", "authcid", "passwd"), strict=True))
        if not username or not password:
            raise MalformedCredentials("empty PLAIN authcid or passwd")
        return Credentials(username=username, password=password, authzid=authzid)


class Login(Mechanism):
    name = "LOGIN"

    def __init__(self) -> None:
        self.username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None or initial == b"":
            return Challenge(USERNAME_PROMPT)
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        if self.username is None:
            self.username = _text(response, "username")
            if not self.username:
                raise MalformedCredentials("empty LOGIN username")
            return Challenge(PASSWORD_PROMPT)
        password = _text(response, "password")
        if not password:
            raise MalformedCredentials("empty LOGIN password")
        return Credentials(username=self.username, password=password)


MECHANISMS: dict[str, type[Mechanism]] = {"PLAIN": Plain, "LOGIN": Login}


def new_mechanism(name: str) -> Mechanism | None:
    """A fresh exchange for a mechanism name (any case), or None if unknown."""
    cls = MECHANISMS.get(name.upper())
    return cls() if cls is not None else None
