"""access(5) tables in smtpd: the keys each check looks up, and what a result means.

Used by :mod:`postpy.smtpd.restrictions` for ``check_client_access``,
``check_reverse_client_hostname_access``, ``check_helo_access``,
``check_sender_access`` and ``check_recipient_access``.

Keys, in the order access(5) gives (each table is asked for one key after
the other; the first key found decides, and ``DUNNO`` there stops the
search, so a host can be exempted from its network's entry):

- host names: ``host.example.org``, then the parent domains
  ``example.org``, ``org`` when ``parent_domain_matches_subdomains`` lists
  ``smtpd_access_maps`` (the default), else ``.example.org``, ``.org``;
- client addresses: ``192.0.2.7``, ``192.0.2``, ``192.0``, ``192``
  (IPv6: the compressed form, dropping one ``:pair`` at a time);
- mail addresses: ``user+ext@domain``, ``user@domain``, the domain and its
  parents as above, ``user+ext@``, ``user@``; the null sender is
  ``smtpd_null_access_lookup_key`` (``<>``).

Pattern tables (``regexp:``, ``pcre:``, ``cidr:``) get only the whole
string: their patterns say what matches.

Results (:func:`interpret`): ``OK`` (or all digits), ``REJECT [text]``,
``DEFER [text]``, ``DEFER_IF_REJECT [text]``, ``DEFER_IF_PERMIT [text]``,
``4NN text``/``5NN text`` (421 and 521 also end the session), ``DUNNO``,
``HOLD [text]``, ``DISCARD [text]`` (a permit), ``FILTER transport:dest``,
``REDIRECT user@domain``, ``BCC user@domain``, ``PREPEND name: value``,
``WARN text``, ``INFO text``, or restriction names (a class of
``smtpd_restriction_classes`` or built-ins), which the evaluator applies.
A result that is none of these is a configuration error: a warning names
the table, and the client gets ``451 4.3.5 Server configuration error``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.mail.address import split_address
from postpy.smtpd.verdict import (
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    NOTHING,
    PERMIT,
    REJECT,
    MessageActions,
    Outcome,
    Subject,
    table_reply,
)
from postpy.tables.maps import open_table, split_spec

PATTERN_TYPES = frozenset({"regexp", "pcre", "cidr"})


@dataclass(frozen=True)
class Codes:
    reject: int = 554       # access_map_reject_code
    defer: int = 450        # access_map_defer_code


@dataclass
class TableResult:
    """What a table result asks for."""

    outcome: Outcome = NOTHING
    restrictions: list[str] = field(default_factory=list)   # apply these (a class, built-ins)
    actions: MessageActions = field(default_factory=MessageActions)
    log: tuple[str, str] | None = None      # (action, text) for a log line: warn, hold, ...
    error: str = ""                          # a bad result: the warning text


# -- keys ------------------------------------------------------------------------

def parent_keys(name: str, parent_matches: bool) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c`` (or ``.b.c``, ``.c``)."""
    name = name.rstrip(".")
    keys = [name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        rest = ".".join(labels[i:])
        keys.append(rest if parent_matches else "." + rest)
    return keys


def address_prefixes(addr: str) -> list[str]:
    """``192.0.2.7`` -> itself, ``192.0.2``, ``192.0``, ``192``; IPv6 likewise by ``:``."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return [addr]
    text = str(ip)          # compressed form for IPv6
    sep = "." if ip.version == 4 else ":"
    keys = [text]
    parts = text.split(sep)
    for n in range(len(parts) - 1, 0, -1):
        key = sep.join(parts[:n]).rstrip(":")
        if key and key not in keys:
            keys.append(key)
    return keys


def host_keys(name: str, addr: str, parent_matches: bool) -> list[str]:
    """A client: its name (unless unknown) and parents, then its address and networks."""
    keys = parent_keys(name, parent_matches) if name and name != "unknown" else []
    return keys + address_prefixes(addr)


def mail_keys(address: str, delimiter: str, parent_matches: bool, null_key: str) -> list[str]:
    """A mail address, as access(5) looks it up."""
    if not address:
        return [null_key]
    local, domain = split_address(address)
    local = local.lower()
    bases = [local]
    if delimiter:
        cut = min((i for i, ch in enumerate(local) if ch in delimiter), default=-1)
        if cut > 0:
            bases.append(local[:cut])
    keys = [f"{b}@{domain}" for b in bases] if domain else []
    if domain:
        keys += parent_keys(domain.lower(), parent_matches)
    keys += [f"{b}@" for b in bases]
    return keys


def find(spec: str, keys: list[str], whole: str) -> str | None:
    """The first result ``spec`` has for ``keys`` (pattern tables: ``whole`` only).
    Raises TableError."""
    table = open_table(spec)
    kind, _ = split_spec(spec)
    for key in ([whole] if kind in PATTERN_TYPES else keys):
        value = table.lookup(key)
        if value is not None:
            return value
    return None


# -- results -----------------------------------------------------------------------

def interpret(value: str, subject: Subject, codes: Codes,
              is_restriction: Callable[[str], bool]) -> TableResult:
    """What a table's result ``value`` means for ``subject``."""
    words = value.split(None, 1)
    if not words:
        return TableResult(error="empty result")
    verb, text = words[0].upper(), (words[1].strip() if len(words) > 1 else "")
    if verb == "OK" or verb.isdigit() and len(verb) != 3:
        return TableResult(Outcome(PERMIT))
    if verb.isdigit() and len(verb) == 3 and verb[0] in "45":
        code = int(verb)
        return TableResult(Outcome(REJECT, table_reply(code, text, subject),
                                   disconnect=code in (421, 521)))
    if verb.isdigit():
        return TableResult(Outcome(PERMIT))
    if verb == "REJECT":
        return TableResult(Outcome(REJECT, table_reply(codes.reject, text, subject)))
    if verb == "DEFER":
        return TableResult(Outcome(REJECT, table_reply(codes.defer, text, subject)))
    if verb in ("DEFER_IF_REJECT", "DEFER_IF_PERMIT"):
        kind = DEFER_IF_REJECT if verb == "DEFER_IF_REJECT" else DEFER_IF_PERMIT
        return TableResult(Outcome(kind, table_reply(codes.defer, text, subject)))
    if verb == "DUNNO":
        return TableResult()
    triggers = f"<{subject.what}>: {subject.label} " + (text or f"triggers {verb} action")
    if verb == "HOLD":
        return TableResult(actions=MessageActions(hold=triggers), log=("hold", triggers))
    if verb == "DISCARD":
        return TableResult(Outcome(PERMIT), actions=MessageActions(discard=triggers),
                           log=("discard", triggers))
    if verb in ("WARN", "INFO"):
        return TableResult(log=(verb.lower(), triggers))
    if verb == "FILTER":
        if ":" not in text:
            return TableResult(error=f"bad FILTER action \"{value}\", need transport:destination")
        return TableResult(actions=MessageActions(filter=text),
                           log=("filter", f"<{subject.what}>: {subject.label} triggers FILTER {text}"))
    if verb in ("REDIRECT", "BCC"):
        if "@" not in text or " " in text:
            return TableResult(error=f"bad {verb} action \"{value}\", need user@domain")
        actions = MessageActions(redirect=text) if verb == "REDIRECT" else MessageActions(bcc=[text])
        return TableResult(actions=actions,
                           log=(verb.lower(), f"<{subject.what}>: {subject.label} triggers {verb} {text}"))
    if verb == "PREPEND":
        name, colon, _ = text.partition(":")
        if not colon or not name or any(ch.isspace() or not 33 <= ord(ch) <= 126 for ch in name):
            return TableResult(error=f"bad PREPEND action \"{value}\", need \"headername: headervalue\"")
        return TableResult(actions=MessageActions(prepend=[text]))
    names = value.replace(",", " ").split()
    if is_restriction(names[0]):
        return TableResult(restrictions=names)
    return TableResult(error=f"unknown action \"{value}\"")

