"""Server-side TLS for STARTTLS (RFC 3207) and port 465 (RFC 8314).

The context is built once per process, before the privilege drop (the key
file is usually readable by root only), from ``smtpd_tls_cert_file``,
``smtpd_tls_key_file`` and ``smtpd_tls_protocols``.  TLS 1.2 is the floor
whatever the setting says; ciphers are Python's ssl defaults.  No client
certificates are requested.

A renewed certificate (certbot and friends replace the files in place) is
picked up without a restart: :class:`CertificateWatcher` looks at the
files' identity (inode, size, mtime) when a connection arrives and builds a
new context when they changed.  If the new files cannot be read (a key
readable by root only, after the privilege drop) or do not match, the old
context stays in use and a warning says so once; ``postpy reload`` then
restarts smtpd, which reads them as root.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable

from postpy.util.tlsinfo import describe  # noqa: F401  (tls.describe for the session)

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


def _identity(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return (-1, -1, exc.errno or 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CertificateWatcher:
    """The current server context, rebuilt when the certificate files change."""

    def __init__(self, cert_file: str, key_file: str, protocols: str,
                 warn: Callable[[str], None]) -> None:
        self.cert_file = cert_file
        self.key_file = key_file or cert_file
        self.protocols = protocols
        self.warn = warn
        self.files = self._files()
        self.context = server_context(cert_file, self.key_file, protocols)
        self.failed: tuple[tuple[int, int, int], ...] | None = None

    def _files(self) -> tuple[tuple[int, int, int], ...]:
        return (_identity(self.cert_file), _identity(self.key_file))

    def current(self) -> ssl.SSLContext:
        files = self._files()
        if files == self.files or files == self.failed:
            return self.context
        try:
            context = server_context(self.cert_file, self.key_file, self.protocols)
        except TlsSetupError as exc:
            self.failed = files
            self.warn(f"{exc}; still using the certificate loaded before")
            return self.context
        self.files, self.context, self.failed = files, context, None
        return context
