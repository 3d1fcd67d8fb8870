"""SMTP AUTH as a client (RFC 4954): the smtp agent logs in to a smarthost.

With ``smtp_sasl_auth_enable = yes`` the session, after EHLO (and after
STARTTLS when TLS was started), looks up a ``username:password`` in
``smtp_sasl_password_maps``; keys in Postfix's order (:func:`password_keys`):

1. with ``smtp_sender_dependent_authentication = yes``: the envelope
   sender, then ``@domain`` of the sender;
2. ``[host]:port``, ``[host]``, ``host:port``, ``host`` of the server;
3. the next-hop domain.

No entry, or a server that does not offer AUTH: the mail is sent without
logging in (as Postfix).  Mechanisms are those the server offers, less
``smtp_sasl_mechanism_filter`` (names or tables), less what the security
options forbid: ``smtp_sasl_security_options`` on a plain-text connection,
``smtp_sasl_tls_security_options`` under TLS (both ``noplaintext,
noanonymous`` by default, Postfix's: PLAIN and LOGIN need ``noanonymous``
alone).  ``noplaintext`` excludes PLAIN and LOGIN, ``nodictionary`` and
``noactive`` also CRAM-MD5.  Preference: CRAM-MD5, PLAIN, LOGIN.

Failures are deferrals, never bounces: a rejected login (``535 ...``) is
``SASL authentication failed; server host[addr] said: 535 ...`` with the
reply's status made temporary; no usable mechanism is ``SASL authentication
failed; cannot authenticate to server host[addr]: no mechanism available``
with the reason.  Both let the next server be tried.  A malformed table
value (no ``:``) or an unreadable table defers with a warning naming the
key, never the value.  Passwords are sent only on the wire: no log line,
no exception text carries them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.reply import Reply
from postpy.util import maillog

PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")
# What each mechanism guarantees (Cyrus SASL's security properties).
PROPERTIES = {
    "CRAM-MD5": frozenset({"noplaintext", "noanonymous"}),
    "PLAIN": frozenset({"noanonymous"}),
    "LOGIN": frozenset({"noanonymous"}),
}
OPTIONS = frozenset({"noplaintext", "noactive", "nodictionary", "noanonymous", "mutual_auth",
                     "forward_secrecy"})


class SaslConfigError(ValueError):
    """A SASL client setting that cannot be used."""


@dataclass
class SaslSettings:
    enable: bool = False
    password_maps: list[str] = field(default_factory=list)
    options: frozenset[str] = frozenset({"noplaintext", "noanonymous"})
    tls_options: frozenset[str] = frozenset({"noplaintext", "noanonymous"})
    mechanism_filter: list[str] = field(default_factory=list)
    sender_dependent: bool = False
    param: str = "smtp_sasl_password_maps"


def parse_options(words: list[str], param: str) -> frozenset[str]:
    options = frozenset(w.lower() for w in words)
    unknown = sorted(options - OPTIONS)
    if unknown:
        raise SaslConfigError(f"{param}: unknown security option {unknown[0]!r}")
    return options


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    key: str = ""               # the table key that found them


def password_keys(sender: str, host: str, port: int, domain: str, *,
                  sender_dependent: bool) -> list[str]:
    keys: list[str] = []
    if sender_dependent and sender:
        keys.append(sender)
        if "@" in sender:
            keys.append("@" + sender.rpartition("@")[2])
    keys += [f"[{host}]:{port}", f"[{host}]", f"{host}:{port}", host]
    if domain:
        keys.append(domain)
    return list(dict.fromkeys(k.lower() for k in keys))


def find_credentials(settings: SaslSettings, sender: str, host: str, port: int,
                     domain: str) -> Credentials | None:
    """The login for this server, or None.  Raises DeliveryFailure (4.3.0, 4.3.5)."""
    if not settings.enable or not settings.password_maps:
        return None
    from postpy.tables.maps import TableError, lookup_in_maps

    for key in password_keys(sender, host, port, domain, sender_dependent=settings.sender_dependent):
        try:
            value = lookup_in_maps(settings.password_maps, key)
        except TableError as exc:
            raise DeliveryFailure("4.3.0", f"{settings.param} lookup failure: {exc}") from None
        if value is None:
            continue
        username, sep, password = value.strip().partition(":")
        if not sep or not username:
            maillog.warning(f"{settings.param}: the entry for {key!r} is not username:password "
                            "(no ':' after the user name); not logging in with it")
            raise DeliveryFailure("4.3.5", f"mail system configuration error: malformed "
                                  f"{settings.param} entry for {key}")
        return Credentials(username, password, key)
    return None


def _filtered(offered: tuple[str, ...], filters: list[str]) -> list[str]:
    if not filters:
        return list(offered)
    names = {f.upper() for f in filters if ":" not in f}
    tables = [f for f in filters if ":" in f]
    kept = []
    for mech in offered:
        if mech in names:
            kept.append(mech)
        elif tables:
            from postpy.tables.maps import TableError, lookup_in_maps
            try:
                if lookup_in_maps(tables, mech) is not None:
                    kept.append(mech)
            except TableError as exc:
                maillog.warning(f"smtp_sasl_mechanism_filter: {exc}")
    return kept


def choose_mechanism(offered: tuple[str, ...], settings: SaslSettings,
                     encrypted: bool) -> tuple[str | None, str]:
    """(mechanism, "") or (None, why none can be used)."""
    options = settings.tls_options if encrypted else settings.options
    candidates = _filtered(offered, settings.mechanism_filter)
    if not candidates:
        return None, (f"the server offers {' '.join(offered) or 'nothing'} and "
                      f"smtp_sasl_mechanism_filter keeps none")
    known = [m for m in PREFERENCE if m in candidates]
    if not known:
        return None, f"the server offers only {' '.join(candidates)}, none supported here"
    allowed = [m for m in known if options <= PROPERTIES[m]]
    if not allowed:
        param = "smtp_sasl_tls_security_options" if encrypted else "smtp_sasl_security_options"
        where = "with" if encrypted else "without"
        return None, (f"{' '.join(known)} not allowed {where} TLS by {param} = "
                      f"{', '.join(sorted(options))}")
    return allowed[0], ""


def _b64(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


Command = Callable[[str], Awaitable[Reply]]


async def authenticate(command: Command, mechanism: str, creds: Credentials) -> Reply:
    """Run the AUTH dialogue; the server's final reply (235 on success)."""
    if mechanism == "PLAIN":
        return await command("AUTH PLAIN " + _b64("\0" + creds.username + "\0" + creds.password))
    if mechanism == "LOGIN":
        reply = await command("AUTH LOGIN")
        for answer in (creds.username, creds.password):
            if reply.code != 334:
                return reply
            reply = await command(_b64(answer))
        if reply.code == 334:           # a third question: give up politely
            reply = await command("*")
        return reply
    if mechanism == "CRAM-MD5":
        reply = await command("AUTH CRAM-MD5")
        if reply.code != 334:
            return reply
        try:
            challenge = base64.b64decode((reply.lines[0] if reply.lines else "").strip(), validate=True)
        except ValueError:
            return await command("*")
        digest = hmac.new(creds.password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
        reply = await command(_b64(f"{creds.username} {digest}"))
        if reply.code == 334:
            reply = await command("*")
        return reply
    raise ValueError(f"unsupported mechanism {mechanism}")
