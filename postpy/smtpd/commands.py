"""Parsing of SMTP command lines, MAIL/RCPT paths and ESMTP parameters.

Pure functions over text: no I/O, no configuration beyond what the caller
passes, so every rule here is tested with tables of good and malformed
input.  A problem raises :class:`CommandError` carrying the exact reply
(see :mod:`postpy.smtpd.replies`).

What is accepted, and why:

- The verb is case-insensitive; it is separated from its argument by one
  or more spaces (RFC 5321 section 4.1.1 wants one; Postfix tolerates more).
- ``MAIL FROM:`` / ``RCPT TO:`` are case-insensitive and may be followed by
  spaces before the path (a common client bug Postfix accepts).  The path
  should be in angle brackets; a bare address without spaces is accepted as
  Postfix does with ``strict_rfc821_envelopes = no``.  A ``>`` inside a
  quoted local part does not end the path.
- ESMTP parameters (RFC 5321 section 4.1.2 ``esmtp-param``): keyword, then
  optionally ``=`` and a value of printable characters other than ``=``
  and space.  Keywords are case-insensitive; a repeated keyword is an error.
- ``SIZE`` (RFC 1870), ``BODY`` (RFC 6152, RFC 3030 BINARYMIME only with
  BDAT), ``SMTPUTF8`` (RFC 6531, no value), ``RET``/``ENVID``
  (RFC 3461 section 4.3/4.4, ENVID as xtext of at most 100 characters),
  ``NOTIFY``/``ORCPT`` (RFC 3461 sections 4.1/4.2), and ``AUTH`` on MAIL
  (RFC 4954 section 5: ``<>`` or an xtext mailbox) only when SMTP AUTH is
  enabled; its value is checked and then ignored (we are the submission
  server, so nobody before us authenticated the mail).  Anything else gets
  ``555 5.5.4 Unsupported option``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postpy.mail.address import AddressError, parse_path
from postpy.smtpd import replies
from postpy.smtpd.replies import Reply

ENVID_MAX = 100
# \Z, not $: "$" also matches before a final line end ("SIZE\n" is no keyword).
_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE_FORBIDDEN = re.compile(r"[\x00-\x20=\x7f]")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+\Z")
NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")


class CommandError(Exception):
    """A malformed command or parameter; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True)
class Command:
    verb: str       # upper case; "" for an empty line
    arg: str        # the rest of the line, leading spaces removed


def decode_line(line: bytes) -> str:
    """Command text: UTF-8 (RFC 6531), other bytes kept as surrogate escapes."""
    return line.decode("utf-8", "surrogateescape")


def parse_command(text: str) -> Command:
    """Split a command line (without its line end) into verb and argument."""
    verb, _, arg = text.partition(" ")
    return Command(verb.upper(), arg.lstrip(" "))


@dataclass(frozen=True)
class PathArg:
    address: str                    # mailbox, source route removed; "" for <>
    written: str                    # text as the client wrote it inside <>
    params: dict[str, str | None]   # upper-case keyword -> value (None: no "=")


def _split_path(rest: str) -> tuple[str, str]:
    """(text inside <>, parameter text) from what follows ``FROM:``/``TO:``."""
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        # Bare address: up to the first space (strict_rfc821_envelopes = no).
        path, _, params = rest.partition(" ")
        if not path or "<" in path or ">" in path:
            raise ValueError("bad path")
        return path, params
    i, quoted = 1, False
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            after = rest[i + 1:]
            if after and not after.startswith(" "):
                raise ValueError("text after path")
            return rest[1:i], after
        i += 1
    raise ValueError("unterminated path")


def _printable(text: str) -> str:
    """Client text fit to echo in a reply: a control character, or a byte that
    was not UTF-8, becomes "?" (a bare CR or LF would end the reply line)."""
    return "".join(ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else "?"
                   for ch in text)


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters separated by spaces; raises CommandError."""
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        keyword, eq, value = word.partition("=")
        if not _KEYWORD.match(keyword) or (eq and (not value or _VALUE_FORBIDDEN.search(value))):
            raise CommandError(replies.bad_parameter(f"Bad parameter syntax: {_printable(word)}"))
        keyword = keyword.upper()
        if keyword in params:
            raise CommandError(replies.bad_parameter(f"Duplicate parameter: {keyword}"))
        params[keyword] = value if eq else None
    return params


def parse_path_arg(arg: str, prefix: str, syntax: Reply, bad_address: Reply,
                   *, allow_null: bool) -> PathArg:
    """``FROM:<addr> params`` / ``TO:<addr> params``; addresses checked with
    UTF-8 allowed (the caller enforces SMTPUTF8 once it knows the parameters)."""
    if arg[:len(prefix)].upper() != prefix:
        raise CommandError(syntax)
    try:
        written, param_text = _split_path(arg[len(prefix):])
    except ValueError:
        raise CommandError(syntax) from None
    params = parse_params(param_text)
    try:
        address = parse_path(written, utf8=True, allow_null=allow_null)
    except AddressError:
        raise CommandError(bad_address) from None
    return PathArg(address, written, params)


def parse_mail(arg: str) -> PathArg:
    return parse_path_arg(arg, "FROM:", replies.SYNTAX_MAIL, replies.BAD_SENDER, allow_null=True)


def parse_rcpt(arg: str) -> PathArg:
    return parse_path_arg(arg, "TO:", replies.SYNTAX_RCPT, replies.BAD_RECIPIENT, allow_null=False)


# -- parameter semantics -------------------------------------------------------

@dataclass
class MailParams:
    size: int | None = None
    body: str = ""              # "" | 7BIT | 8BITMIME | BINARYMIME
    smtputf8: bool = False
    ret: str = ""               # "" | FULL | HDRS
    envid: str = ""             # decoded xtext


@dataclass
class RcptParams:
    notify: str = ""            # "" | NEVER | comma list of SUCCESS,FAILURE,DELAY
    orcpt: str = ""             # "addr-type;address", address decoded


def xtext_decode(text: str) -> str:
    """RFC 3461 section 4: ``+XX`` hex escapes; raises ValueError when malformed."""
    if not _XTEXT.match(text):
        raise ValueError("bad xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def mail_params(params: dict[str, str | None], *, smtputf8_enable: bool = True,
                chunking: bool = True, auth_enable: bool = False) -> MailParams:
    """Interpret MAIL FROM parameters; raises CommandError."""
    out = MailParams()
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                raise CommandError(replies.bad_parameter("Bad message size syntax"))
            out.size = int(value)
        elif key == "BODY":
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME") and not (body == "BINARYMIME" and chunking):
                raise CommandError(replies.bad_parameter("Bad BODY keyword value"))
            out.body = body
        elif key == "SMTPUTF8" and smtputf8_enable:
            if value is not None:
                raise CommandError(replies.bad_parameter("Bad SMTPUTF8 parameter syntax"))
            out.smtputf8 = True
        elif key == "RET":
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise CommandError(replies.bad_parameter("Bad RET parameter syntax"))
            out.ret = ret
        elif key == "ENVID":
            try:
                envid = xtext_decode(value or "")
            except ValueError:
                envid = ""
            if not envid or len(envid) > ENVID_MAX or not envid.isprintable():
                raise CommandError(replies.bad_parameter("Bad ENVID parameter syntax"))
            out.envid = envid
        elif key == "AUTH" and auth_enable:
            if value is None or (value != "<>" and not (value and _XTEXT.match(value))):
                raise CommandError(replies.bad_parameter("Bad AUTH parameter syntax"))
        else:
            raise CommandError(replies.unsupported_option(key))
    return out


def rcpt_params(params: dict[str, str | None]) -> RcptParams:
    """Interpret RCPT TO parameters; raises CommandError."""
    out = RcptParams()
    for key, value in params.items():
        if key == "NOTIFY":
            words = (value or "").upper().split(",")
            ok = words == ["NEVER"] or (
                all(w in NOTIFY_WORDS for w in words) and len(set(words)) == len(words))
            if not value or not ok:
                raise CommandError(replies.bad_parameter("Error: Bad NOTIFY parameter syntax"))
            out.notify = ",".join(words)
        elif key == "ORCPT":
            out.orcpt = _orcpt(value or "")
        else:
            raise CommandError(replies.unsupported_option(key))
    return out


def _orcpt(value: str) -> str:
    """``addr-type;xtext``: rfc822 addresses are xtext (RFC 3461), utf-8 ones
    may carry UTF-8 directly (RFC 6533); the address must not be empty."""
    addr_type, sep, encoded = value.partition(";")
    bad = CommandError(replies.bad_parameter("Error: Bad ORCPT parameter syntax"))
    if not sep or not encoded or not _ADDR_TYPE.match(addr_type):
        raise bad
    if addr_type.lower() == "utf-8":
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in encoded) or not encoded.isprintable():
            raise bad
        return f"{addr_type};{encoded}"
    try:
        address = xtext_decode(encoded)
    except ValueError:
        raise bad from None
    if not address.isprintable():
        raise bad
    return f"{addr_type};{address}"


def parse_bdat(arg: str) -> tuple[int, bool]:
    """``BDAT size [LAST]`` -> (size, last); raises CommandError."""
    words = arg.split()
    if not 1 <= len(words) <= 2 or not (words[0].isascii() and words[0].isdigit()) or len(words[0]) > 20:
        raise CommandError(replies.SYNTAX_BDAT)
    if len(words) == 2 and words[1].upper() != "LAST":
        raise CommandError(replies.SYNTAX_BDAT)
    return int(words[0]), len(words) == 2
