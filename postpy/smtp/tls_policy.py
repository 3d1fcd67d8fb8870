"""Which TLS policy a next hop gets: ``smtp_tls_policy_maps`` over the global level.

The delivery agent asks :meth:`PolicyTable.for_nexthop` once per delivery,
before it connects.  Keys tried, first match wins (Postfix's order):

- ``[host]:port`` as written, then ``[host]`` (relayhost and transport
  next hops in brackets);
- for a domain next hop: ``domain:port`` when a port was given, the
  ``domain``, then each parent as ``.parent`` (``.example.com``, ``.com``).

A value is a level and attributes, e.g. ``secure match=.example.com``,
``fingerprint match=AB:CD:...|12:34:...``, ``encrypt
protocols=>=TLSv1.2 ciphers=high``, ``verify match=hostname:nexthop``.
``match=`` may be given more than once; names are separated by ``:``,
fingerprints by ``|``.  ``exclude=`` lists ciphers to leave out.  No entry:
``smtp_tls_security_level`` with the ``smtp_tls_*`` defaults
(:mod:`postpy.smtp.tls` describes the levels).

A table that cannot be read defers the mail (4.3.0); an entry that cannot
be used (unknown level or attribute, bad protocol list, ``fingerprint``
without ``match=``) logs a warning naming the key and defers (4.7.5),
never sends with less protection than asked.  ``dane`` and ``dane-only``
are accepted and behave as ``may`` and ``encrypt``, with a warning (DANE
is not implemented yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.tls import ContextFactory, TlsConfigError, TlsPolicy, cipher_string, make_policy
from postpy.util import maillog

IGNORED_ATTRIBUTES = ("tafile", "servername", "connection_reuse", "enable_rpk")


@dataclass
class PolicyDefaults:
    level: str = "may"
    protocols: str = ">=TLSv1"
    mandatory_protocols: str = ">=TLSv1"
    ciphers: str = "medium"
    mandatory_ciphers: str = "medium"
    exclude: str = ""
    verify_match: tuple[str, ...] = ("hostname",)
    secure_match: tuple[str, ...] = ("nexthop", "dot-nexthop")
    fingerprint_match: tuple[str, ...] = ()
    digest: str = "sha256"
    loglevel: int = 0
    param: str = "smtp_tls_policy_maps"


class PolicyError(ValueError):
    """An entry that cannot be used; the text says why."""


def policy_keys(nexthop: str) -> tuple[list[str], str]:
    """(lookup keys, the next-hop domain for ``nexthop``/``dot-nexthop`` matching)."""
    words = nexthop.replace(",", " ").split()
    first = words[0].lower() if words else ""
    if first.startswith("["):
        end = first.find("]")
        bracketed = first[:end + 1]
        keys = [first] if bracketed == first else [first, bracketed]
        return keys, first[1:end]
    domain, port = (first.split(":", 1) + [""])[:2] if first.count(":") == 1 else (first, "")
    keys = ([first] if port else []) + [domain]
    labels = domain.split(".")
    keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels)) if labels[i]]
    return keys, domain


def parse_value(value: str) -> tuple[str, dict[str, list[str]]]:
    """``level attr=value ...`` -> (level, {attr: [values]}).  Raises PolicyError."""
    words = value.split()
    if not words:
        raise PolicyError("empty policy")
    level = words[0].lower()
    attrs: dict[str, list[str]] = {}
    for word in words[1:]:
        name, sep, text = word.partition("=")
        name = name.lower()
        if not sep or not text:
            raise PolicyError(f"malformed attribute {word[:60]!r} (expected name=value)")
        if name not in ("match", "protocols", "ciphers", "exclude", *IGNORED_ATTRIBUTES):
            raise PolicyError(f"unknown attribute {name!r}")
        attrs.setdefault(name, []).append(text)
    return level, attrs


class PolicyTable:
    def __init__(self, defaults: PolicyDefaults, maps: list[str], factory: ContextFactory) -> None:
        self.defaults = defaults
        self.maps = maps
        self.factory = factory
        self._cache: dict[str, TlsPolicy] = {}
        self._warned: set[str] = set()
        self.default = self._build(defaults.level, {}, "")     # raises TlsConfigError at start

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            maillog.warning(text)

    def _build(self, level: str, attrs: dict[str, list[str]], where: str) -> TlsPolicy:
        d = self.defaults
        if level in ("dane", "dane-only"):
            instead = "may" if level == "dane" else "encrypt"
            self._warn_once(f"TLS security level {level}{' for ' + where if where else ''}: "
                            f"DANE is not implemented yet; using {instead}")
        for name in IGNORED_ATTRIBUTES:
            if name in attrs:
                self._warn_once(f"{d.param}: {where}: attribute {name} is not supported; ignored")
        match: tuple[str, ...]
        if "match" in attrs:
            sep = "|" if level == "fingerprint" else ":"
            match = tuple(m for text in attrs["match"] for m in text.split(sep) if m)
        elif level == "fingerprint":
            match = d.fingerprint_match
        elif level == "secure":
            match = d.secure_match
        else:
            match = d.verify_match
        if level == "fingerprint" and not match:
            raise TlsConfigError("fingerprint level without any match= fingerprint")
        mandatory = level not in ("may", "dane")
        ciphers = attrs.get("ciphers", [d.mandatory_ciphers if mandatory else d.ciphers])[-1]
        exclude = " ".join([d.exclude, *attrs.get("exclude", [])])
        protocols = attrs.get("protocols", [d.mandatory_protocols if mandatory else d.protocols])[-1]
        return make_policy(level, factory=self.factory, protocols=protocols, mandatory=protocols,
                           ciphers=cipher_string(ciphers, exclude), match=match, digest=d.digest,
                           loglevel=d.loglevel, where=where)

    def for_nexthop(self, nexthop: str) -> tuple[TlsPolicy, str]:
        """(policy, next-hop domain).  Raises DeliveryFailure (see the module text)."""
        keys, domain = policy_keys(nexthop)
        if not self.maps:
            return self.default, domain
        from postpy.tables.maps import TableError, lookup_in_maps

        for key in keys:
            try:
                value = lookup_in_maps(self.maps, key)
            except TableError as exc:
                raise DeliveryFailure("4.3.0", f"TLS policy lookup for {nexthop} failed: {exc}") from None
            if value is None:
                continue
            cached = self._cache.get(f"{key}\0{value}")
            if cached is not None:
                return cached, domain
            try:
                level, attrs = parse_value(value)
                policy = self._build(level, attrs, key)
            except (PolicyError, TlsConfigError) as exc:
                maillog.warning(f"{self.defaults.param}: malformed TLS policy for {key!r}: {exc}")
                raise DeliveryFailure("4.7.5", f"TLS policy lookup for {nexthop} failed: "
                                      f"malformed policy for {key} ({exc})") from None
            self._cache[f"{key}\0{value}"] = policy
            return policy, domain
        return self.default, domain
