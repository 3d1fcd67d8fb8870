"""Server-side TLS for STARTTLS (RFC 3207): the context and its description.

The context is built once per process, before the privilege drop (the key
file is usually readable by root only), from ``smtpd_tls_cert_file``,
``smtpd_tls_key_file`` and ``smtpd_tls_protocols``.  TLS 1.2 is the floor
whatever the setting says.  No client certificates are requested.
"""

from __future__ import annotations

import re
import ssl

_VERSIONS = {
    "tlsv1": ssl.TLSVersion.TLSv1, "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
FLOOR = ssl.TLSVersion.TLSv1_2


class TlsSetupError(Exception):
    """The certificate, key or protocol setting cannot be used."""


def minimum_version(protocols: str) -> ssl.TLSVersion:
    """The least protocol from ``>=TLSv1.3`` or Postfix's ``!SSLv3, !TLSv1`` form;
    never below TLS 1.2."""
    text = protocols.strip().lower()
    m = re.fullmatch(r">=\s*(tlsv1(?:\.[123])?)", text)
    if m:
        return max(_VERSIONS[m.group(1)], FLOOR)
    excluded = {w.strip().lstrip("!") for w in re.split(r"[\s,:]+", text) if w.startswith("!")}
    for version in _ORDER:
        name = "tlsv1.2" if version is ssl.TLSVersion.TLSv1_2 else "tlsv1.3"
        if name not in excluded:
            return version
    raise TlsSetupError(f"smtpd_tls_protocols = {protocols}: no protocol left to use")


def server_context(cert_file: str, key_file: str, protocols: str = ">=TLSv1.2") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = minimum_version(protocols)
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(cert_file, key_file or cert_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load certificate {cert_file} / key {key_file}: {exc}") from None
    return context


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``, Postfix's shape."""
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "TLS"
    if not cipher:
        return version
    name, _, bits = cipher
    return f"{version} with cipher {name} ({bits}/{bits} bits)"
