"""The SMTP AUTH command (RFC 4954) as smtpd runs it, minus the socket.

smtpd builds one :class:`SaslServer` per process when
``smtpd_sasl_auth_enable = yes`` and hands each AUTH command to
:meth:`SaslServer.auth` with the session's facts and an :class:`Exchange`
that sends a ``334`` challenge and reads the client's answer.  The result is
an :class:`AuthOutcome`: the final reply, whether to close the connection,
and on success the login name and mechanism to record (``sasl_username``,
``sasl_method``; the protocol becomes ESMTPA/ESMTPSA).

Replies, in the order the checks run:

==========================================================  =========================
the session has not said EHLO                               503 5.5.1
no TLS and ``smtpd_tls_auth_only = yes``                    538 5.7.11
already authenticated                                       503 5.5.1
inside a mail transaction                                   503 5.5.1
no mechanism named                                          501 5.5.4
the client has used up its failures (ratelimit)             421 4.7.0, close
a mechanism we do not offer                                 504 5.5.4
a response that is ``*``                                    501 5.0.0 aborted
a response that is not base64                               501 5.5.2
a response line that is too long                            500 5.5.6
the backend could not decide                                454 4.7.0
wrong credentials (after the growing delay)                 535 5.7.8
... and that was the client's last allowed failure          421 4.7.0, close
right credentials                                           235 2.7.0
==========================================================  =========================

Log lines: a failure is ``warning: name[addr]: SASL PLAIN authentication
failed: <reason>, sasl_username=<user>`` (the shape fail2ban's postfix-sasl
filter reads); a backend problem and a cut-off are warnings too.  Neither
the password nor any client response is ever logged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from postpy.config.maincf import Config
from postpy.sasl import mechanisms
from postpy.sasl.backend import AuthResult, Backend, ClientInfo, make_backend
from postpy.sasl.mechanisms import Challenge, Credentials
from postpy.sasl.ratelimit import DirectoryStore, FailureLimiter, FailureStore, MemoryStore
from postpy.util import maillog

OFFERED = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class AuthReply:
    code: int
    text: str               # enhanced status code and text, without the basic code
    close: bool = False


SUCCESS = AuthReply(235, "2.7.0 Authentication successful")
NEED_EHLO = AuthReply(503, "5.5.1 Error: send EHLO first")
NEED_TLS = AuthReply(538, "5.7.11 Encryption required for requested authentication mechanism")
ALREADY = AuthReply(503, "5.5.1 Error: already authenticated")
IN_TRANSACTION = AuthReply(503, "5.5.1 Error: MAIL transaction in progress")
SYNTAX = AuthReply(501, "5.5.4 Syntax: AUTH mechanism")
UNKNOWN_MECHANISM = AuthReply(504, "5.5.4 Unrecognized authentication type")
ABORTED = AuthReply(501, "5.0.0 Authentication aborted")
BAD_BASE64 = AuthReply(501, "5.5.2 Cannot decode response")
TOO_LONG = AuthReply(500, "5.5.6 Authentication Exchange line is too long")
TEMPORARY = AuthReply(454, "4.7.0 Temporary authentication failure")
FAILED = AuthReply(535, "5.7.8 Error: authentication failed")
NOT_ENABLED = AuthReply(503, "5.5.1 Error: authentication not enabled")


def too_many_failures(hostname: str) -> AuthReply:
    return AuthReply(421, f"4.7.0 {hostname} Error: too many failed authentication attempts",
                     close=True)


@dataclass
class AuthOutcome:
    reply: AuthReply
    username: str = ""
    method: str = ""

    @property
    def ok(self) -> bool:
        return self.reply.code == 235


@dataclass(frozen=True)
class SessionFacts:
    """What the AUTH command needs to know about the SMTP session."""

    client: ClientInfo
    label: str                  # name[addr], for log lines
    hostname: str               # myhostname, for the 421 text
    ehlo: bool = False
    tls_active: bool = False
    authenticated: bool = False
    in_transaction: bool = False


class Exchange(Protocol):
    async def challenge(self, data: str) -> str | None:
        """Send ``334 data``; return the client's line without CRLF, None if too long."""


def printable(text: str, limit: int = 100) -> str:
    """A client-supplied name made safe for one log line."""
    return "".join(ch if ch.isprintable() and ch != "," else "?" for ch in text[:limit])


@dataclass
class SaslServer:
    backend: Backend
    limiter: FailureLimiter
    tls_auth_only: bool = True
    mechanisms: tuple[str, ...] = OFFERED

    @classmethod
    def from_config(cls, cfg: Config, failure_directory: str = "") -> SaslServer:
        """Build the backend and limiter (BackendConfigError if unusable).
        ``failure_directory``: where failures are counted across processes
        (see :mod:`postpy.sasl.ratelimit`); empty: in this process only."""
        store: FailureStore = DirectoryStore(failure_directory) if failure_directory \
            else MemoryStore()
        limiter = FailureLimiter(delay=cfg.get_time("smtpd_sasl_failure_delay"),
                                 limit=cfg.get_int("smtpd_sasl_failure_limit"),
                                 window=cfg.get_time("smtpd_sasl_failure_window"),
                                 store=store, warn=maillog.warning)
        return cls(backend=make_backend(cfg), limiter=limiter,
                   tls_auth_only=cfg.get_bool("smtpd_tls_auth_only"))

    def offered(self, tls_active: bool) -> bool:
        return tls_active or not self.tls_auth_only

    def ehlo_keyword(self, tls_active: bool) -> str | None:
        """``AUTH PLAIN LOGIN`` when AUTH may be used now, else None."""
        return "AUTH " + " ".join(self.mechanisms) if self.offered(tls_active) else None

    def precheck(self, arg: str, facts: SessionFacts) -> AuthReply | None:
        if not facts.ehlo:
            return NEED_EHLO
        if not self.offered(facts.tls_active):
            return NEED_TLS
        if facts.authenticated:
            return ALREADY
        if facts.in_transaction:
            return IN_TRANSACTION
        if not arg.split():
            return SYNTAX
        return None

    async def auth(self, arg: str, facts: SessionFacts, exchange: Exchange) -> AuthOutcome:
        """Run one AUTH command to its final reply."""
        refusal = self.precheck(arg, facts)
        if refusal is not None:
            return AuthOutcome(refusal)
        if self.limiter.blocked(facts.client.addr):
            maillog.warning(f"{facts.label}: too many failed authentication attempts; "
                            "refusing AUTH")
            return AuthOutcome(too_many_failures(facts.hostname))
        words = arg.split()
        name = words[0].upper()
        mech = mechanisms.new_mechanism(name) if name in self.mechanisms else None
        if mech is None or len(words) > 2:
            return AuthOutcome(UNKNOWN_MECHANISM if mech is None else SYNTAX)
        try:
            initial = mechanisms.decode_response(words[1], initial=True) if len(words) > 1 else None
            step = mech.start(initial)
            while isinstance(step, Challenge):
                line = await exchange.challenge(mechanisms.encode_challenge(step.data))
                if line is None:
                    return AuthOutcome(TOO_LONG)
                step = mech.step(mechanisms.decode_response(line))
        except mechanisms.AuthAborted:
            return AuthOutcome(ABORTED)
        except mechanisms.BadResponse:
            return AuthOutcome(BAD_BASE64)
        except mechanisms.MalformedCredentials as exc:
            return await self._failed(facts, name, "", str(exc))
        return await self._check(facts, name, step)

    async def _check(self, facts: SessionFacts, method: str, cred: Credentials) -> AuthOutcome:
        if cred.authzid and cred.authzid != cred.username:
            return await self._failed(facts, method, cred.username,
                                      "authorization identity differs from the login name")
        try:
            result = await self.backend.authenticate(cred.username, cred.password, facts.client)
        except Exception as exc:    # a backend bug must not end the session or leak text
            result = AuthResult.temporary(f"SASL {self.backend.name}: {type(exc).__name__}")
        if result.ok:
            return AuthOutcome(SUCCESS, username=result.username or cred.username, method=method)
        if result.temporary_failure:
            maillog.warning(f"{facts.label}: SASL {method} authentication aborted: {result.text}")
            return AuthOutcome(TEMPORARY)
        return await self._failed(facts, method, cred.username, result.text)

    async def _failed(self, facts: SessionFacts, method: str, username: str,
                      reason: str) -> AuthOutcome:
        who = f", sasl_username={printable(username)}" if username else ""
        maillog.warning(f"{facts.label}: SASL {method} authentication failed: "
                        f"{printable(reason or 'authentication failure', 200)}{who}")
        delay = self.limiter.record_failure(facts.client.addr)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.limiter.blocked(facts.client.addr):
            maillog.warning(f"{facts.label}: too many failed authentication attempts "
                            f"({self.limiter.failures(facts.client.addr)}); disconnecting")
            return AuthOutcome(too_many_failures(facts.hostname))
        return AuthOutcome(FAILED)
