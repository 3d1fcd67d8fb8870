"""Fuzz target: SMTP command lines and MAIL/RCPT parameters
(postpy.smtpd.commands, what smtpd does with every line a client sends).

Random and mutated command lines go through the reader's decoding, the
verb split, the path parsers and the ESMTP parameter semantics (``SIZE``,
``BODY``, ``SMTPUTF8``, ``RET``, ``ENVID``, ``AUTH``, ``NOTIFY``, ``ORCPT``)
and ``BDAT``'s argument.  The only refusal allowed is
:class:`~postpy.smtpd.commands.CommandError`, carrying a 5xx reply the
client can be sent.  Properties of what is accepted: numbers were bounded
before conversion (``SIZE`` and ``BDAT`` counts below 10**20), ``ENVID`` is
at most 100 printable characters, ``NOTIFY`` is ``NEVER`` or distinct known
words, ``ORCPT`` keeps its ``type;`` prefix, and the addresses have no
spaces or line ends outside quotes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz.mutate import inputs, text_inputs
from postpy.smtpd.commands import (
    ENVID_MAX,
    NOTIFY_WORDS,
    CommandError,
    decode_line,
    mail_params,
    parse_bdat,
    parse_command,
    parse_mail,
    parse_params,
    parse_rcpt,
    rcpt_params,
    xtext_decode,
)
from postpy.smtpd.replies import Reply

LINES = [
    b"MAIL FROM:<alice@example.org>",
    b"MAIL FROM:<> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B314",
    b"mail from: <a@b.example> size=10240000 body=binarymime smtputf8 auth=<>",
    b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> SMTPUTF8 AUTH=bob+40example.org",
    b"MAIL FROM:<\"odd > name\"@x.example> BODY=7BIT",
    b"MAIL FROM:<@a.example,@b.example:x@y.example> RET=FULL",
    b"MAIL FROM:bare@example.org SIZE=99999999999999999999",
    b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob+40example.net",
    b"RCPT TO:<postmaster> NOTIFY=NEVER",
    b"rcpt to:<x@[127.0.0.1]> ORCPT=utf-8;j\xc3\xb6rg@example.org",
    b"RCPT TO:<x@[IPv6:2001:db8::1]> notify=delay",
    b"BDAT 1000 LAST", b"BDAT 0", b"EHLO client.example", b"HELO x", b"DATA", b"RSET",
    b"NOOP", b"QUIT", b"VRFY alice", b"STARTTLS", b"AUTH PLAIN AGJvYgBzZWNyZXQ=", b"",
]
PARAMS = [
    "SIZE=123", "BODY=8BITMIME", "SMTPUTF8", "RET=FULL", "ENVID=abc+2Bdef", "AUTH=<>",
    "NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;a+40b.example", "ORCPT=utf-8;\u00e9@x", "X-FOO=bar",
    "SIZE=" + "9" * 30, "ENVID=" + "a" * 101, "NOTIFY=NEVER,SUCCESS", "ORCPT=;", "BODY",
]


def refused(exc: CommandError) -> None:
    reply = exc.reply
    assert isinstance(reply, Reply)
    assert 500 <= reply.code <= 599, reply
    text = str(reply)
    assert text.isprintable() and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text), reply
    text.encode("utf-8")        # sent as is: no surrogate escapes from the client's bytes


def check_address(address: str) -> None:
    outside_quotes = "".join(part for i, part in enumerate(address.split('"')) if i % 2 == 0)
    assert not any(ch in outside_quotes for ch in " \r\n<>"), address


def check_mail(arg: str, smtputf8_enable: bool, chunking: bool, auth_enable: bool) -> None:
    try:
        path = parse_mail(arg)
        params = mail_params(path.params, smtputf8_enable=smtputf8_enable, chunking=chunking,
                             auth_enable=auth_enable)
    except CommandError as exc:
        refused(exc)
        return
    check_address(path.address)
    assert params.size is None or 0 <= params.size < 10**20
    assert params.body in ("", "7BIT", "8BITMIME") or (params.body == "BINARYMIME" and chunking)
    assert params.ret in ("", "FULL", "HDRS")
    assert len(params.envid) <= ENVID_MAX and params.envid.isprintable()
    assert not params.smtputf8 or smtputf8_enable


def check_rcpt(arg: str) -> None:
    try:
        path = parse_rcpt(arg)
        params = rcpt_params(path.params)
    except CommandError as exc:
        refused(exc)
        return
    assert path.address
    check_address(path.address)
    words = params.notify.split(",") if params.notify else []
    assert words in ([], ["NEVER"]) or (set(words) <= set(NOTIFY_WORDS) and len(set(words)) == len(words))
    if params.orcpt:
        addr_type, sep, rest = params.orcpt.partition(";")
        assert sep and addr_type and rest and rest.isprintable()


def check_line(line: bytes, smtputf8_enable: bool, chunking: bool, auth_enable: bool) -> None:
    command = parse_command(decode_line(line))
    assert command.verb == command.verb.upper()
    assert not command.arg.startswith(" ")
    if command.verb == "MAIL":
        check_mail(command.arg, smtputf8_enable, chunking, auth_enable)
    elif command.verb == "RCPT":
        check_rcpt(command.arg)
    elif command.verb == "BDAT":
        try:
            size, last = parse_bdat(command.arg)
        except CommandError as exc:
            refused(exc)
            return
        assert 0 <= size < 10**20 and isinstance(last, bool)


@given(inputs(LINES), st.booleans(), st.booleans(), st.booleans())
def test_command_lines(line: bytes, smtputf8_enable: bool, chunking: bool, auth_enable: bool) -> None:
    check_line(line, smtputf8_enable, chunking, auth_enable)


@given(text_inputs(LINES_TEXT := [line.decode("utf-8", "surrogateescape") for line in LINES]),
       st.booleans())
def test_mail_and_rcpt_arguments(line: str, flag: bool) -> None:
    """The argument alone, whatever verb it came with."""
    arg = line.partition(" ")[2]
    check_mail(arg, flag, not flag, flag)
    check_rcpt(arg)
    check_mail("FROM:" + arg, True, True, True)
    check_rcpt("TO:" + arg)


@given(st.lists(st.one_of(st.sampled_from(PARAMS), text_inputs(PARAMS)), max_size=8))
def test_parameter_lists(words: list[str]) -> None:
    text = " ".join(words)
    try:
        params = parse_params(text)
    except CommandError as exc:
        refused(exc)
        return
    assert all(k == k.upper() for k in params)
    for semantics in (lambda p: mail_params(p, auth_enable=True), rcpt_params):
        try:
            semantics(params)
        except CommandError as exc:
            refused(exc)
    check_mail("FROM:<a@b.example> " + text, True, True, True)
    check_rcpt("TO:<a@b.example> " + text)


@given(text_inputs(["abc", "a+2Bb", "+41+42", "+4", "+zz", "\u00e9"]))
def test_xtext(text: str) -> None:
    try:
        decoded = xtext_decode(text)
    except ValueError:
        return
    assert len(decoded) <= len(text)
