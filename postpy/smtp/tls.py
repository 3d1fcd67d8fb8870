"""Client-side TLS for STARTTLS (RFC 3207): contexts, and checks of the peer.

One :class:`TlsPolicy` says what a session to one next hop requires (the
global ``smtp_tls_security_level``, or an ``smtp_tls_policy_maps`` entry
chosen by :mod:`postpy.smtp.tls_policy`):

===========  ===========================================================
none         never send STARTTLS
may          opportunistic (the default): STARTTLS when the server offers
             it, no certificate checks; a failed handshake is retried once
             in plain text on a new connection (as Postfix does)
encrypt      STARTTLS is required, certificates are not checked; a server
             that does not offer it is skipped (4.7.4)
fingerprint  STARTTLS is required and the SHA-256 (``smtp_tls_fingerprint_
             digest``) fingerprint of the server's certificate or of its
             public key must be one of ``match=`` (no CA involved)
verify       STARTTLS is required, the certificate must chain to
             ``smtp_tls_CAfile`` (or the system's CAs) and name one of
             ``match=`` (default ``smtp_tls_verify_cert_match``: hostname)
secure       as verify; default names ``smtp_tls_secure_cert_match``
             (nexthop, dot-nexthop)
dane         not implemented yet: as ``may`` (dane-only: as ``encrypt``),
             with a warning
===========  ===========================================================

A failed check is ``4.7.5 Server certificate not verified`` (another
server may be tried).  Protocols (``smtp_tls_protocols`` for ``may``,
``smtp_tls_mandatory_protocols`` above it, or ``protocols=``) take
Postfix's ``>=TLSv1.2``, ``<=TLSv1.3`` and ``!TLSv1`` forms; cipher grades
``ciphers=`` high/medium/low/export/null.

Contexts are made by :class:`ContextFactory`, built before the chroot: it
holds the CA file's text, so contexts made later for a policy entry with
its own protocols or ciphers need no file; the client certificate
(``smtp_tls_cert_file``/``smtp_tls_key_file``) is loaded into the
contexts made before the privilege drop, later ones try the files again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from postpy.util import maillog
from postpy.util.tlsinfo import describe

__all__ = ["TlsPolicy", "TlsConfigError", "ContextFactory", "make_policy", "describe",
           "parse_protocols", "fingerprints", "peer_names", "name_matches", "LEVELS"]

LEVELS = ("none", "may", "dane", "dane-only", "encrypt", "fingerprint", "verify", "secure")
CHECKED = ("fingerprint", "verify", "secure")       # levels that verify the peer
_VERSIONS = {"sslv2": 0, "sslv3": 1, "tlsv1": 2, "tlsv1.1": 3, "tlsv1.2": 4, "tlsv1.3": 5}
_TLS = {2: ssl.TLSVersion.TLSv1, 3: ssl.TLSVersion.TLSv1_1, 4: ssl.TLSVersion.TLSv1_2,
        5: ssl.TLSVersion.TLSv1_3}
_GRADES = {"high": "HIGH:!aNULL:!eNULL:@STRENGTH", "medium": "", "low": "", "export": "",
           "null": "eNULL:!aNULL:@SECLEVEL=0"}


class TlsConfigError(Exception):
    """A TLS setting that cannot be used; the text says which."""


@dataclass
class TlsPolicy:
    level: str
    context: ssl.SSLContext | None
    match: tuple[str, ...] = ()      # verify/secure: name patterns; fingerprint: hex digests
    digest: str = "sha256"
    loglevel: int = 0
    where: str = ""                  # "" (global) or the policy table key, for log lines

    @property
    def required(self) -> bool:
        return self.level not in ("none", "may", "dane")

    @property
    def verify(self) -> bool:
        """The peer is checked (chain and name, or fingerprint)."""
        return self.level in CHECKED


def parse_protocols(text: str, param: str = "protocols") -> tuple[int, int]:
    """Postfix protocol syntax -> (lowest, highest) index in SSLv2..TLSv1.3; TLSv1 at least."""
    low, high = 2, 5
    allowed = set(range(6))
    listed: set[int] = set()
    for word in text.replace(",", " ").replace(":", " ").split():
        w = word.lower()
        op = ""
        for prefix in (">=", "<=", "!"):
            if w.startswith(prefix):
                op, w = prefix, w[len(prefix):]
                break
        if w not in _VERSIONS:
            raise TlsConfigError(f"{param}: unknown TLS protocol {word!r}")
        n = _VERSIONS[w]
        if op == ">=":
            low = max(low, n)
        elif op == "<=":
            high = min(high, n)
        elif op == "!":
            allowed.discard(n)
        else:
            listed.add(n)
    if listed:
        allowed &= listed
    usable = [n for n in sorted(allowed) if low <= n <= high and n >= 2]
    if not usable:
        raise TlsConfigError(f"{param}: {text!r} leaves no usable TLS protocol")
    return usable[0], usable[-1]


def cipher_string(grade: str, exclude: str = "") -> str:
    """The OpenSSL cipher list for a Postfix grade ("" keeps the library's default)."""
    g = (grade or "medium").strip().lower()
    if g not in _GRADES:
        raise TlsConfigError(f"ciphers: unknown cipher grade {grade!r} (high, medium, low, export, null)")
    base = _GRADES[g]
    extra = ":".join(f"!{c}" for c in exclude.replace(",", " ").replace(":", " ").split())
    if extra:
        base = f"{base or 'DEFAULT'}:{extra}"
    return base


@dataclass
class ContextFactory:
    """SSL contexts by (checks chain, protocols, ciphers), made once each."""

    cafile: str = ""
    cert_file: str = ""
    key_file: str = ""
    cadata: str | None = None        # the CA file's text, read before the chroot
    _made: dict[tuple[bool, str, str], ssl.SSLContext] = field(default_factory=dict)

    def load(self) -> ContextFactory:
        """Read the files now (before the chroot).  Raises TlsConfigError."""
        if self.cafile:
            try:
                with open(self.cafile, encoding="ascii", errors="replace") as f:
                    self.cadata = f.read()
            except OSError as exc:
                raise TlsConfigError(f"smtp_tls_CAfile = {self.cafile}: {exc.strerror}") from None
        return self

    def context(self, chain: bool, protocols: str = ">=TLSv1", ciphers: str = "") -> ssl.SSLContext:
        key = (chain, protocols, ciphers)
        made = self._made.get(key)
        if made is not None:
            return made
        low, high = parse_protocols(protocols)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False          # names are checked by check_peer
        ctx.verify_mode = ssl.CERT_REQUIRED if chain else ssl.CERT_NONE
        try:
            # TLSv1 as the floor is the library's own floor (Python deprecates asking for it).
            if low > 2:
                ctx.minimum_version = _TLS[low]
            if high < 5:
                ctx.maximum_version = _TLS[high]
            if ciphers:
                ctx.set_ciphers(ciphers)
        except (ValueError, ssl.SSLError) as exc:
            raise TlsConfigError(f"protocols {protocols!r} / ciphers {ciphers!r}: {exc}") from None
        if chain:
            try:
                if self.cadata is not None:
                    ctx.load_verify_locations(cadata=self.cadata)
                else:
                    ctx.load_default_certs()
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(f"smtp_tls_CAfile = {self.cafile}: {exc}") from None
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file or self.cert_file)
            except (OSError, ssl.SSLError) as exc:
                if not self._made:          # at start: a configuration error
                    raise TlsConfigError(f"smtp_tls_cert_file = {self.cert_file}: {exc}") from None
                maillog.warning(f"cannot load client certificate {self.cert_file}: {exc}; "
                                "this session goes without one")
        self._made[key] = ctx
        return ctx


def make_policy(level: str, cafile: str = "", *, factory: ContextFactory | None = None,
                protocols: str = ">=TLSv1", mandatory: str = ">=TLSv1", ciphers: str = "",
                match: tuple[str, ...] = (), digest: str = "sha256", loglevel: int = 0,
                where: str = "") -> TlsPolicy:
    """The policy for ``level``.  Raises TlsConfigError."""
    level = (level or "may").strip().lower()
    if level not in LEVELS:
        raise TlsConfigError(f"invalid TLS security level {level!r}: expected one of {', '.join(LEVELS)}")
    if level == "none":
        return TlsPolicy(level, None, loglevel=loglevel, where=where)
    if factory is None:
        factory = ContextFactory(cafile).load()
    chain = level in ("verify", "secure")
    if not match and chain:
        match = ("hostname",) if level == "verify" else ("nexthop", "dot-nexthop")
    context = factory.context(chain, protocols if level in ("may", "dane") else mandatory, ciphers)
    if digest not in hashlib.algorithms_available:
        raise TlsConfigError(f"smtp_tls_fingerprint_digest = {digest}: unknown digest")
    return TlsPolicy(level, context, match, digest, loglevel, where)


# -- checks of the peer's certificate ---------------------------------------------

def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``pos``."""
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[pos + 2:pos + 2 + n], "big")
    return tag, pos + 2 + n, pos + 2 + n + length


def public_key_der(cert: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo of a DER certificate (RFC 5280 section 4.1), or None."""
    try:
        _, tbs_at, _ = _der_element(cert, 0)
        _, pos, tbs_end = _der_element(cert, tbs_at)
        if cert[pos] == 0xA0:                         # [0] version
            pos = _der_element(cert, pos)[2]
        for _ in range(5):                            # serial, signature, issuer, validity, subject
            pos = _der_element(cert, pos)[2]
        _, _, end = _der_element(cert, pos)
        return cert[pos:end] if end <= tbs_end else None
    except IndexError:
        return None


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


def fingerprints(cert: bytes, digest: str = "sha256") -> tuple[str, str]:
    """(certificate, public key) fingerprints as ``AB:CD:...``."""
    pkey = public_key_der(cert)
    return (_colons(hashlib.new(digest, cert).hexdigest()),
            _colons(hashlib.new(digest, pkey).hexdigest()) if pkey else "")


def normal_fingerprint(text: str) -> str:
    return text.replace(":", "").strip().lower()


def peer_names(cert: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a verified certificate names (CN only without DNS names)."""
    dns, ips = [], []
    for kind, value in cert.get("subjectAltName", ()) or ():
        if kind == "DNS":
            dns.append(str(value).lower().rstrip("."))
        elif kind == "IP Address":
            ips.append(str(value).strip())
    if not dns:
        for rdn in cert.get("subject", ()) or ():
            for key, value in rdn:
                if key == "commonName":
                    dns.append(str(value).lower().rstrip("."))
    return dns, ips


def _cert_name_matches(cert_name: str, name: str) -> bool:
    if cert_name == name:
        return True
    if cert_name.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == cert_name[2:] and name.split(".", 1)[0] != ""
    return False


def name_matches(patterns: list[str], dns: list[str], ips: list[str]) -> str | None:
    """The certificate name that one of ``patterns`` accepts (``.domain``: any subdomain)."""
    for pattern in patterns:
        p = pattern.lower().rstrip(".")
        address = _address(p)
        if address is not None:
            if any(_address(ip) == address for ip in ips):
                return p
            continue
        for name in dns:
            if p.startswith("."):
                bare = name[2:] if name.startswith("*.") else name
                if bare.endswith(p) and len(bare) > len(p):
                    return name
            elif _cert_name_matches(name, p):
                return name
    return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    text = text[5:] if text.startswith("ipv6:") else text
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def expand_match(patterns: tuple[str, ...], host: str, nexthop: str) -> list[str]:
    """``hostname``, ``nexthop`` and ``dot-nexthop`` as the names they stand for."""
    out: list[str] = []
    for p in patterns:
        word = p.lower()
        if word == "hostname":
            out.append(host)
        elif word == "nexthop":
            out.append(nexthop)
        elif word == "dot-nexthop":
            out.append("." + nexthop)
        else:
            out.append(p)
    return out


def check_peer(policy: TlsPolicy, ssl_object: ssl.SSLObject, host: str, nexthop: str) -> str | None:
    """Why the peer fails ``policy`` (for the log), or None when it passes."""
    der = ssl_object.getpeercert(binary_form=True)
    if policy.level == "fingerprint":
        if not der:
            return "the server sent no certificate"
        cert_fp, key_fp = fingerprints(der, policy.digest)
        wanted = {normal_fingerprint(m) for m in policy.match}
        if normal_fingerprint(cert_fp) in wanted or (key_fp and normal_fingerprint(key_fp) in wanted):
            return None
        return f"fingerprint mismatch: certificate {policy.digest} {cert_fp}, public key {key_fp}"
    if policy.level in ("verify", "secure"):
        cert = ssl_object.getpeercert() or {}
        patterns = expand_match(policy.match, host, nexthop)
        dns, ips = peer_names(cert)
        if name_matches(patterns, dns, ips) is None:
            names = ", ".join(dns + ips) or "none"
            return f"server certificate names ({names}) match none of {', '.join(patterns)}"
    return None


def certificate_summary(ssl_object: ssl.SSLObject, digest: str) -> str:
    """``subject_CN=..., issuer_CN=..., fingerprint=...`` (smtp_tls_loglevel 2)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return "no peer certificate"
    cert_fp, key_fp = fingerprints(der, digest)
    info: Mapping[str, Any] = ssl_object.getpeercert() or {}

    def cn(which: str) -> str:
        for rdn in info.get(which, ()) or ():
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return "(unknown: certificate not verified)" if not info else ""
    return (f"subject_CN={cn('subject')}, issuer_CN={cn('issuer')}, "
            f"cert {digest} fingerprint={cert_fp}, pkey {digest} fingerprint={key_fp}")
