"""Command-line, path and ESMTP parameter parsing (postpy.smtpd.commands)."""

from __future__ import annotations

import pytest

from postpy.smtpd.commands import (
    Command,
    CommandError,
    mail_params,
    parse_bdat,
    parse_command,
    parse_mail,
    parse_params,
    parse_rcpt,
    rcpt_params,
    xtext_decode,
)


@pytest.mark.parametrize(("text", "verb", "arg"), [
    ("EHLO client.example", "EHLO", "client.example"),
    ("ehlo client.example", "EHLO", "client.example"),
    ("MAIL FROM:<a@b>", "MAIL", "FROM:<a@b>"),
    ("NOOP", "NOOP", ""),
    ("RSET   ", "RSET", ""),
    ("QUIT  now", "QUIT", "now"),
    ("", "", ""),
])
def test_parse_command(text: str, verb: str, arg: str) -> None:
    assert parse_command(text) == Command(verb, arg)


@pytest.mark.parametrize(("arg", "address", "params"), [
    ("FROM:<a@example.org>", "a@example.org", {}),
    ("from:<a@example.org>", "a@example.org", {}),
    ("FROM: <a@example.org>", "a@example.org", {}),
    ("FROM:<>", "", {}),
    ("FROM:a@example.org", "a@example.org", {}),
    ("FROM:<a@example.org> SIZE=100", "a@example.org", {"SIZE": "100"}),
    ("FROM:<a@example.org> size=100 body=8BITMIME", "a@example.org", {"SIZE": "100", "BODY": "8BITMIME"}),
    ("FROM:<a@example.org>  SMTPUTF8", "a@example.org", {"SMTPUTF8": None}),
    ('FROM:<"x>y"@example.org>', '"x>y"@example.org', {}),
    ("FROM:<@relay.example:a@example.org>", "a@example.org", {}),
])
def test_parse_mail_good(arg: str, address: str, params: dict[str, str | None]) -> None:
    path = parse_mail(arg)
    assert path.address == address
    assert path.params == params


@pytest.mark.parametrize(("arg", "code"), [
    ("", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("FROM", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("FROM:<a@b.example", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("FROM:<a@b.example>x", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("FROM:<a b@example.org>", "501 5.1.7 Bad sender address syntax"),
    ("FROM:<a@>", "501 5.1.7 Bad sender address syntax"),
    ("FROM:<a@exa_mple.org>", "501 5.1.7 Bad sender address syntax"),
    ("FROM:<a@b.example> SIZE=", "501 5.5.4 Bad parameter syntax: SIZE="),
    ("FROM:<a@b.example> =x", "501 5.5.4 Bad parameter syntax: =x"),
    ("FROM:<a@b.example> SIZE=1 SIZE=2", "501 5.5.4 Duplicate parameter: SIZE"),
])
def test_parse_mail_bad(arg: str, code: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_mail(arg)
    assert str(info.value.reply) == code


@pytest.mark.parametrize(("arg", "code"), [
    ("TO:<>", "501 5.1.3 Bad recipient address syntax"),
    ("TO:<a@@b>", "501 5.1.3 Bad recipient address syntax"),
    ("FROM:<a@b.example>", "501 5.5.4 Syntax: RCPT TO:<address>"),
    ("TO:", "501 5.5.4 Syntax: RCPT TO:<address>"),
])
def test_parse_rcpt_bad(arg: str, code: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_rcpt(arg)
    assert str(info.value.reply) == code


def test_parse_rcpt_keeps_written_form() -> None:
    path = parse_rcpt("TO:<@a,@b:user@c.example> NOTIFY=NEVER")
    assert path.written == "@a,@b:user@c.example"
    assert path.address == "user@c.example"
    assert path.params == {"NOTIFY": "NEVER"}


def test_parse_params_keeps_order() -> None:
    assert list(parse_params("A=1 b c-d=x")) == ["A", "B", "C-D"]


@pytest.mark.parametrize(("params", "field", "value"), [
    ({"SIZE": "12345"}, "size", 12345),
    ({"BODY": "7bit"}, "body", "7BIT"),
    ({"BODY": "8BITMIME"}, "body", "8BITMIME"),
    ({"BODY": "BINARYMIME"}, "body", "BINARYMIME"),
    ({"SMTPUTF8": None}, "smtputf8", True),
    ({"RET": "hdrs"}, "ret", "HDRS"),
    ({"ENVID": "abc+2Bdef"}, "envid", "abc+def"),
])
def test_mail_params_good(params: dict[str, str | None], field: str, value: object) -> None:
    assert getattr(mail_params(params), field) == value


@pytest.mark.parametrize(("params", "text"), [
    ({"SIZE": "12x"}, "501 5.5.4 Bad message size syntax"),
    ({"SIZE": None}, "501 5.5.4 Bad message size syntax"),
    ({"SIZE": "9" * 21}, "501 5.5.4 Bad message size syntax"),
    ({"SIZE": "\u00b2"}, "501 5.5.4 Bad message size syntax"),        # a digit to str.isdigit, not to int()
    ({"SIZE": "\u0661\u0662"}, "501 5.5.4 Bad message size syntax"),  # Arabic-Indic digits
    ({"BODY": "9BIT"}, "501 5.5.4 Bad BODY keyword value"),
    ({"SMTPUTF8": "yes"}, "501 5.5.4 Bad SMTPUTF8 parameter syntax"),
    ({"RET": "ALL"}, "501 5.5.4 Bad RET parameter syntax"),
    ({"ENVID": "a+zz"}, "501 5.5.4 Bad ENVID parameter syntax"),
    ({"ENVID": "x" * 101}, "501 5.5.4 Bad ENVID parameter syntax"),
    ({"ENVID": "a+0Ab"}, "501 5.5.4 Bad ENVID parameter syntax"),
    ({"AUTH": "<>"}, "555 5.5.4 Unsupported option: AUTH"),
    ({"XFOO": None}, "555 5.5.4 Unsupported option: XFOO"),
])
def test_mail_params_bad(params: dict[str, str | None], text: str) -> None:
    with pytest.raises(CommandError) as info:
        mail_params(params)
    assert str(info.value.reply) == text


def test_smtputf8_unsupported_when_disabled() -> None:
    with pytest.raises(CommandError) as info:
        mail_params({"SMTPUTF8": None}, smtputf8_enable=False)
    assert info.value.reply.code == 555


def test_binarymime_needs_chunking() -> None:
    with pytest.raises(CommandError):
        mail_params({"BODY": "BINARYMIME"}, chunking=False)


@pytest.mark.parametrize(("params", "notify", "orcpt"), [
    ({"NOTIFY": "NEVER"}, "NEVER", ""),
    ({"NOTIFY": "success,failure"}, "SUCCESS,FAILURE", ""),
    ({"NOTIFY": "DELAY"}, "DELAY", ""),
    ({"ORCPT": "rfc822;bob+2Bx@example.org"}, "", "rfc822;bob+x@example.org"),
    ({"ORCPT": "utf-8;jörg@example.org"}, "", "utf-8;jörg@example.org"),
])
def test_rcpt_params_good(params: dict[str, str | None], notify: str, orcpt: str) -> None:
    got = rcpt_params(params)
    assert (got.notify, got.orcpt) == (notify, orcpt)


@pytest.mark.parametrize("params", [
    {"NOTIFY": "NEVER,SUCCESS"},
    {"NOTIFY": "SOMETIMES"},
    {"NOTIFY": None},
    {"NOTIFY": "SUCCESS,SUCCESS"},
    {"ORCPT": "rfc822"},
    {"ORCPT": "rfc822;"},
    {"ORCPT": ";x@y"},
    {"ORCPT": "rfc822;a+ZZ"},
    {"ORCPT": "bad type;x@y"},
])
def test_rcpt_params_bad(params: dict[str, str | None]) -> None:
    with pytest.raises(CommandError) as info:
        rcpt_params(params)
    assert info.value.reply.code == 501


def test_rcpt_params_unknown() -> None:
    with pytest.raises(CommandError) as info:
        rcpt_params({"RRVS": "x"})
    assert str(info.value.reply) == "555 5.5.4 Unsupported option: RRVS"


@pytest.mark.parametrize(("text", "decoded"), [
    ("plain", "plain"), ("a+2Bb", "a+b"), ("+3D", "="), ("", ""),
])
def test_xtext_decode(text: str, decoded: str) -> None:
    assert xtext_decode(text) == decoded


@pytest.mark.parametrize("text", ["a+", "a+2b", "a=b", "a b", "a+G0"])
def test_xtext_decode_bad(text: str) -> None:
    with pytest.raises(ValueError):
        xtext_decode(text)


@pytest.mark.parametrize(("arg", "result"), [
    ("0", (0, False)), ("10 LAST", (10, True)), ("10 last", (10, True)), ("7", (7, False)),
])
def test_parse_bdat(arg: str, result: tuple[int, bool]) -> None:
    assert parse_bdat(arg) == result


@pytest.mark.parametrize("arg", ["", "x", "-1", "10 FIRST", "10 LAST more", "1" * 21, "\u00b2 LAST"])
def test_parse_bdat_bad(arg: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_bdat(arg)
    assert str(info.value.reply) == "501 5.5.4 Syntax: BDAT count [LAST]"


def test_bad_parameter_is_echoed_without_control_characters() -> None:
    """A bare CR (or a byte that was not UTF-8) in a parameter must not reach
    the reply line: it would end it early or send raw bytes back."""
    from postpy.smtpd.commands import CommandError, decode_line, parse_params

    with pytest.raises(CommandError) as info:
        parse_params(decode_line(b"SIZE=1 X\rY\xff=\x01"))
    assert str(info.value.reply) == "501 5.5.4 Bad parameter syntax: X?Y?=?"


@pytest.mark.parametrize("word", ["SIZE\n", "SMTPUTF8\n", "X\n"])
def test_a_final_line_end_is_not_part_of_a_keyword_or_xtext(word: str) -> None:
    from postpy.smtpd.commands import CommandError, parse_params, xtext_decode

    with pytest.raises(CommandError) as info:
        parse_params(word)
    assert "\n" not in str(info.value.reply)
    with pytest.raises(ValueError):
        xtext_decode("abc\n")
