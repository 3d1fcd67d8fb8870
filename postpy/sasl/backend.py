"""The password-checking interface and the choice of backend.

Every source of passwords answers one question, independent of the SASL
mechanism the client used (the mechanism only decoded the credentials)::

    await backend.authenticate(username, password, client) -> AuthResult

``AuthResult.ok`` says whether the password is right; ``username`` is the
canonical login name to record (Dovecot may rewrite it), ``temporary_failure``
means the backend could not decide (a file that cannot be read, Dovecot
down): smtpd answers ``454 4.7.0`` and does not count it against the
client.  ``text`` is a short reason for the log, never containing the
password.

Backends are created once per smtpd process by :func:`make_backend`,
before the privilege drop (so a file readable only by root and the
mail_owner group can be opened), and must be safe to call from many
concurrent sessions of the process's event loop.

``smtpd_sasl_type`` chooses the implementation:

``passwd-file``  :mod:`postpy.sasl.passwdfile`, ``smtpd_sasl_password_file``
``dovecot``      :mod:`postpy.sasl.dovecot`, the socket ``smtpd_sasl_path``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postpy.config.maincf import Config

TYPES = ("passwd-file", "dovecot")


class BackendConfigError(Exception):
    """The configured backend cannot be used; str() names the parameter."""


@dataclass(frozen=True)
class ClientInfo:
    """What a backend may know about the SMTP client (for Dovecot's lip/rip)."""

    addr: str = ""
    port: str = ""
    server_addr: str = ""
    server_port: str = ""
    tls: bool = False


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    username: str = ""
    temporary_failure: bool = False
    text: str = ""

    @classmethod
    def success(cls, username: str) -> AuthResult:
        return cls(True, username)

    @classmethod
    def failure(cls, text: str = "authentication failure") -> AuthResult:
        return cls(False, text=text)

    @classmethod
    def temporary(cls, text: str) -> AuthResult:
        return cls(False, temporary_failure=True, text=text)


class Backend(Protocol):
    name: str

    async def authenticate(self, username: str, password: str, client: ClientInfo) -> AuthResult:
        ...

    async def close(self) -> None:
        ...


def make_backend(cfg: Config) -> Backend:
    """The backend ``smtpd_sasl_type`` names, configured from ``cfg``."""
    kind = cfg.get("smtpd_sasl_type").strip().lower()
    if kind == "passwd-file":
        from postpy.sasl.passwdfile import PasswdFileBackend

        return PasswdFileBackend(cfg.get("smtpd_sasl_password_file").strip())
    if kind == "dovecot":
        from postpy.sasl.dovecot import DovecotBackend

        path = cfg.get("smtpd_sasl_path").strip()
        if not path:
            raise BackendConfigError("smtpd_sasl_path is empty: name Dovecot's auth socket")
        return DovecotBackend(path, service=cfg.get("smtpd_sasl_service").strip() or "smtp")
    raise BackendConfigError(f"smtpd_sasl_type = {kind}: use {' or '.join(TYPES)}")
