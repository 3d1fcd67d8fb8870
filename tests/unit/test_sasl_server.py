"""The AUTH command dialogue (RFC 4954) with a scripted client and backend."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postpy.config.maincf import load_config
from postpy.sasl import server
from postpy.sasl.backend import AuthResult, BackendConfigError, ClientInfo
from postpy.sasl.ratelimit import FailureLimiter
from postpy.sasl.server import AuthOutcome, SaslServer, SessionFacts
from postpy.util import maillog

USERS = {"alice": "secret"}


@dataclass
class FakeBackend:
    name: str = "fake"
    temporary: bool = False
    seen: list[tuple[str, str, ClientInfo]] = field(default_factory=list)

    async def authenticate(self, username: str, password: str, client: ClientInfo) -> AuthResult:
        self.seen.append((username, password, client))
        if self.temporary:
            return AuthResult.temporary("backend down")
        if USERS.get(username) == password:
            return AuthResult.success(username.lower())
        return AuthResult.failure()

    async def close(self) -> None:
        pass


class Script:
    """The client's side: answers to 334 challenges, in order."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.challenges: list[str] = []

    async def challenge(self, data: str) -> str | None:
        self.challenges.append(data)
        return self.answers.pop(0)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


FACTS = SessionFacts(client=ClientInfo(addr="192.0.2.7"), label="unknown[192.0.2.7]",
                     hostname="mx.example", ehlo=True, tls_active=True)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "maillog"
    maillog.setup("smtpd", maillog_file=str(path))
    return path


def make(delay: float = 0.0, limit: int = 3, backend: FakeBackend | None = None) -> SaslServer:
    return SaslServer(backend=backend or FakeBackend(),
                      limiter=FailureLimiter(delay=delay, limit=limit, window=600))


def run(sasl: SaslServer, arg: str, script: Script | None = None,
        facts: SessionFacts = FACTS) -> AuthOutcome:
    return asyncio.run(sasl.auth(arg, facts, script or Script()))


PLAIN_OK = b64("\0alice\0secret")
PLAIN_BAD = b64("\0alice\0wrong")


@pytest.mark.parametrize("arg, answers, code, challenges", [
    (f"PLAIN {PLAIN_OK}", [], 235, []),
    (f"plain {PLAIN_OK}", [], 235, []),
    ("PLAIN", [PLAIN_OK], 235, [""]),
    (f"PLAIN {b64('alice' + chr(0) + 'alice' + chr(0) + 'secret')}", [], 235, []),
    ("LOGIN", [b64("alice"), b64("secret")], 235, ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"]),
    (f"LOGIN {b64('alice')}", [b64("secret")], 235, ["UGFzc3dvcmQ6"]),
    (f"PLAIN {PLAIN_BAD}", [], 535, []),
    ("LOGIN", [b64("alice"), b64("nope")], 535, ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"]),
    (f"PLAIN {b64('bob' + chr(0) + 'alice' + chr(0) + 'secret')}", [], 535, []),  # authzid
    (f"PLAIN {b64('no-nuls')}", [], 535, []),
    ("PLAIN", ["*"], 501, [""]),
    ("LOGIN", [b64("alice"), "*"], 501, ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"]),
    ("PLAIN *", [], 501, []),
    ("PLAIN !!!", [], 501, []),
    ("LOGIN", ["@@@"], 501, ["VXNlcm5hbWU6"]),
    ("PLAIN", [None], 500, [""]),
    ("CRAM-MD5", [], 504, []),
    ("XOAUTH2 abc", [], 504, []),
    (f"PLAIN {PLAIN_OK} extra", [], 501, []),
    ("", [], 501, []),
    ("   ", [], 501, []),
])
def test_dialogue(log: Path, arg: str, answers: list[str | None], code: int,
                  challenges: list[str]) -> None:
    script = Script(*answers)
    outcome = run(make(), arg, script)
    assert outcome.reply.code == code, outcome.reply
    assert script.challenges == challenges
    if code == 235:
        assert outcome.ok and outcome.username == "alice"
        assert outcome.method == arg.split()[0].upper()
        assert outcome.reply.text == "2.7.0 Authentication successful"
    else:
        assert not outcome.ok and not outcome.username


@pytest.mark.parametrize("facts, code, text", [
    (SessionFacts(FACTS.client, FACTS.label, "h", ehlo=False, tls_active=True), 503, "send EHLO"),
    (SessionFacts(FACTS.client, FACTS.label, "h", ehlo=True, tls_active=False), 538, "5.7.11"),
    (SessionFacts(FACTS.client, FACTS.label, "h", ehlo=True, tls_active=True,
                  authenticated=True), 503, "already authenticated"),
    (SessionFacts(FACTS.client, FACTS.label, "h", ehlo=True, tls_active=True,
                  in_transaction=True), 503, "transaction"),
])
def test_state_checks(log: Path, facts: SessionFacts, code: int, text: str) -> None:
    backend = FakeBackend()
    outcome = run(make(backend=backend), f"PLAIN {PLAIN_OK}", facts=facts)
    assert outcome.reply.code == code and text in outcome.reply.text
    assert backend.seen == []


def test_tls_not_required_when_auth_only_is_off(log: Path) -> None:
    sasl = make()
    sasl.tls_auth_only = False
    facts = SessionFacts(FACTS.client, FACTS.label, "h", ehlo=True, tls_active=False)
    assert run(sasl, f"PLAIN {PLAIN_OK}", facts=facts).ok
    assert sasl.ehlo_keyword(False) == "AUTH PLAIN LOGIN"


def test_ehlo_keyword_only_over_tls() -> None:
    sasl = make()
    assert sasl.ehlo_keyword(False) is None
    assert sasl.ehlo_keyword(True) == "AUTH PLAIN LOGIN"


def test_temporary_failure_is_454_and_not_counted(log: Path) -> None:
    sasl = make(limit=1, backend=FakeBackend(temporary=True))
    for _ in range(3):
        assert run(sasl, f"PLAIN {PLAIN_OK}").reply.code == 454
    assert sasl.limiter.failures("192.0.2.7") == 0


def test_failures_are_slowed_then_cut_off(log: Path) -> None:
    sasl = make(delay=0.05, limit=3)
    started = time.monotonic()
    first = run(sasl, f"PLAIN {PLAIN_BAD}")
    second = run(sasl, f"PLAIN {PLAIN_BAD}")
    elapsed = time.monotonic() - started
    assert (first.reply.code, second.reply.code) == (535, 535)
    assert elapsed >= 0.05 + 0.10 - 0.01
    third = run(sasl, f"PLAIN {PLAIN_BAD}")
    assert third.reply.code == 421 and third.reply.close
    assert "too many failed authentication attempts" in third.reply.text
    # even the right password is refused now, without asking the backend
    backend = sasl.backend
    assert isinstance(backend, FakeBackend)
    asked = len(backend.seen)
    fourth = run(sasl, f"PLAIN {PLAIN_OK}")
    assert fourth.reply.code == 421 and len(backend.seen) == asked
    other = SessionFacts(ClientInfo(addr="192.0.2.8"), "unknown[192.0.2.8]", "h",
                         ehlo=True, tls_active=True)
    assert run(sasl, f"PLAIN {PLAIN_OK}", facts=other).ok


def test_log_lines_never_hold_the_password(log: Path) -> None:
    sasl = make(limit=10)
    run(sasl, f"PLAIN {PLAIN_BAD}")
    run(sasl, "LOGIN", Script(b64("alice"), b64("wrong")))
    run(sasl, f"PLAIN {PLAIN_OK}")
    run(sasl, f"PLAIN {b64('x' + chr(0) + 'alice' + chr(0) + 'secret')}")
    text = log.read_text()
    assert "warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: " \
           "authentication failure, sasl_username=alice" in text
    assert "SASL LOGIN authentication failed" in text
    for secret in ("secret", "wrong", PLAIN_OK, PLAIN_BAD, b64("wrong"), b64("secret")):
        assert secret not in text


def test_backend_exception_is_temporary(log: Path) -> None:
    class Broken(FakeBackend):
        async def authenticate(self, username: str, password: str,
                               client: ClientInfo) -> AuthResult:
            raise RuntimeError(f"boom {password}")

    outcome = run(make(backend=Broken()), f"PLAIN {PLAIN_OK}")
    assert outcome.reply.code == 454
    assert "secret" not in log.read_text()


def test_from_config(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("smtpd_sasl_failure_delay = 2s\nsmtpd_sasl_failure_limit = 7\n"
                                      "smtpd_tls_auth_only = no\n")
    sasl = SaslServer.from_config(load_config(str(tmp_path)))
    assert (sasl.limiter.delay, sasl.limiter.limit, sasl.limiter.window) == (2.0, 7, 600.0)
    assert sasl.backend.name == "passwd-file" and not sasl.tls_auth_only
    (tmp_path / "main.cf").write_text("smtpd_sasl_type = dovecot\n")
    sasl = SaslServer.from_config(load_config(str(tmp_path)))
    assert sasl.backend.name == "dovecot"
    (tmp_path / "main.cf").write_text("smtpd_sasl_type = cyrus\n")
    with pytest.raises(BackendConfigError, match="cyrus"):
        SaslServer.from_config(load_config(str(tmp_path)))


def test_printable() -> None:
    assert server.printable("al\x00ice,x") == "al?ice?x"
    assert len(server.printable("a" * 500)) == 100
