"""pipe: ``$macro`` expansion in the command's ``argv=`` words.

Forms: ``$name``, ``${name}``, ``${name?text}`` (text when the value is not
empty), ``${name:text}`` (text when it is empty), ``$$`` (a dollar sign).
The words are never given to a shell, so a value is never split or
interpreted: it becomes (part of) exactly one argument.

Recipient macros (:data:`RECIPIENT_MACROS`): a word that uses one expands
into one argument per recipient of the request, in order (pipe(8); set
``<transport>_destination_recipient_limit = 1`` for one recipient per
command)::

    recipient           the address (local part unquoted unless flag q)
    original_recipient  the address as first received
    mailbox             the local part
    user                the local part without its extension
    extension           the extension (after recipient_delimiter)
    domain              the domain

Message macros (:data:`MESSAGE_MACROS`) expand once: ``sender`` (the null
sender becomes ``null_sender=``), ``nexthop``, ``queue_id``, ``size``,
``client_address``, ``client_helo``, ``client_hostname``, ``client_port``,
``client_protocol``, ``sasl_method``, ``sasl_username``, ``sasl_sender``.

Flags: ``u`` folds local parts (and so user, mailbox, extension) to lower
case; ``h`` folds domains and the next hop; ``q`` quotes local parts that
are not plain dot-strings (RFC 5322), for sender and recipients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from postpy.config.maincf import ConfigError
from postpy.mail import address as addr

RECIPIENT_MACROS = frozenset({"recipient", "original_recipient", "mailbox", "user", "extension", "domain"})
MESSAGE_MACROS = frozenset({
    "sender", "nexthop", "queue_id", "size", "client_address", "client_helo", "client_hostname",
    "client_port", "client_protocol", "sasl_method", "sasl_username", "sasl_sender",
})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_MACRO = re.compile(r"\$(?:\{(" + _NAME + r")(?:([?:])([^{}$]*))?\}|(" + _NAME + r")|(\$))")


def _names(word: str) -> list[str]:
    """The macro names in ``word``; ConfigError for a ``$`` that starts no macro."""
    names: list[str] = []
    pos = 0
    for m in _MACRO.finditer(word):
        if "$" in word[pos:m.start()]:
            break
        if not m.group(5):
            names.append(m.group(1) or m.group(4))
        pos = m.end()
    if "$" in word[pos:]:
        raise ConfigError(f"argv word \"{word}\": bad macro syntax")
    return names


def check_macros(word: str) -> None:
    """ConfigError unless every macro in ``word`` is well formed and known."""
    for name in _names(word):
        if name not in RECIPIENT_MACROS and name not in MESSAGE_MACROS:
            raise ConfigError(f"argv word \"{word}\": unknown macro ${{{name}}}")


def expand_word(word: str, values: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(5):
            return "$"
        value = values.get(m.group(1) or m.group(4), "")
        if m.group(2) == "?":
            return m.group(3) if value else ""
        if m.group(2) == ":":
            return "" if value else m.group(3)
        return value

    return _MACRO.sub(replace, word)


def expand_argv(argv: Iterable[str], message: Mapping[str, str],
                recipients: list[Mapping[str, str]]) -> list[str]:
    """The command's arguments for one request (see the module docstring)."""
    out: list[str] = []
    for word in argv:
        if RECIPIENT_MACROS.intersection(_names(word)):
            out += [expand_word(word, {**message, **rcpt}) for rcpt in recipients]
        else:
            out.append(expand_word(word, message))
    return out


def show_address(address: str, flags: frozenset[str], *, null: str = "") -> str:
    """An envelope address as the command sees it (flags u, h, q)."""
    if not address:
        return null
    local, domain = addr.split_address(address) if "@" in address else (address, "")
    local = addr.unquote_local(local)
    if "u" in flags:
        local = local.lower()
    if "h" in flags:
        domain = domain.lower()
    if "q" in flags:
        return addr.join_address(local, domain)
    return f"{local}@{domain}" if domain else local


def recipient_values(address: str, original: str, flags: frozenset[str],
                     delimiter: str) -> dict[str, str]:
    """The recipient macros for one recipient."""
    shown = show_address(address, flags)
    local, domain = addr.split_address(address) if "@" in address else (address, "")
    mailbox = addr.unquote_local(local)
    if "u" in flags:
        mailbox = mailbox.lower()
    if "h" in flags:
        domain = domain.lower()
    user, extension = mailbox, ""
    for ch in delimiter:
        if ch in mailbox:
            user, _, extension = mailbox.partition(ch)
            break
    return {"recipient": shown, "original_recipient": show_address(original or address, flags),
            "mailbox": mailbox, "user": user, "extension": extension, "domain": domain}
