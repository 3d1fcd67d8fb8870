"""Client-side TLS for STARTTLS (RFC 3207), by ``smtp_tls_security_level``.

=========  ===========================================================
none       never send STARTTLS
may        opportunistic (the default): STARTTLS when the server offers
           it, no certificate checks; a failed handshake is retried once
           in plain text on a new connection (as Postfix does)
encrypt    STARTTLS is required, certificates are not checked; a server
           that does not offer it is skipped (4.7.4)
verify     STARTTLS is required and the server's certificate must chain
           to ``smtp_tls_CAfile`` (or the system's CAs when empty) and
           name the server host (the MX name, or the literal); else 4.7.5
=========  ===========================================================

Contexts are built once, before the chroot (the CA file may be outside
it).  RFC 7672 (DANE) and per-destination policy tables are not here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from postpy.util.tlsinfo import describe

__all__ = ["TlsPolicy", "make_policy", "describe"]

LEVELS = ("none", "may", "encrypt", "verify")


class TlsConfigError(Exception):
    """A TLS setting that cannot be used; the text says which."""


@dataclass
class TlsPolicy:
    level: str
    context: ssl.SSLContext | None

    @property
    def required(self) -> bool:
        return self.level in ("encrypt", "verify")

    @property
    def verify(self) -> bool:
        return self.level == "verify"


def make_policy(level: str, cafile: str = "") -> TlsPolicy:
    level = (level or "may").strip().lower()
    if level not in LEVELS:
        raise TlsConfigError(f"smtp_tls_security_level = {level}: expected one of {', '.join(LEVELS)}")
    if level == "none":
        return TlsPolicy(level, None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if level == "verify":
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if cafile:
                context.load_verify_locations(cafile=cafile)
            else:
                context.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"smtp_tls_CAfile = {cafile}: {exc}") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return TlsPolicy(level, context)
