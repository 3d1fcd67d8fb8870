"""sendmail's command line parser: one row per option form, good and bad."""

from __future__ import annotations

import pytest

from postpy.cli.sendmail_options import Options, UsageError, parse_args, parse_notify

GOOD = [
    # argv, expected fields
    ([], {"mode": "m", "recipients": []}),
    (["bob"], {"recipients": ["bob"]}),
    (["-t"], {"extract": True}),
    (["-ti", "x"], {"extract": True, "ignore_dots": True, "recipients": ["x"]}),
    (["-oi", "x"], {"ignore_dots": True}),
    (["-o", "i", "x"], {"ignore_dots": True}),
    (["-i"], {"ignore_dots": True}),
    (["-f", "alice@example.org", "bob"], {"sender": "alice@example.org", "recipients": ["bob"]}),
    (["-falice"], {"sender": "alice"}),
    (["-r", "alice"], {"sender": "alice"}),
    (["-f", "<>"], {"sender": ""}),
    (["-f", ""], {"sender": ""}),
    (["-f", "<a@b>"], {"sender": "a@b"}),
    (["-F", "Alice Example"], {"full_name": "Alice Example"}),
    (["-N", "success,delay,failure"], {"notify": "SUCCESS,DELAY,FAILURE"}),
    (["-N", "failure,delay"], {"notify": "DELAY,FAILURE"}),
    (["-N", "never"], {"notify": "NEVER"}),
    (["-R", "hdrs"], {"ret": "HDRS"}),
    (["-R", "FULL"], {"ret": "FULL"}),
    (["-V", "envid-1"], {"envid": "envid-1"}),
    (["-B", "8bitmime"], {"body": "8BITMIME"}),
    (["-B", "7BIT"], {"body": "7BIT"}),
    (["-bm"], {"mode": "m"}),
    (["-bs"], {"mode": "s"}),
    (["-bp"], {"mode": "p"}),
    (["-bi"], {"mode": "i"}),
    (["-I"], {"mode": "i"}),
    (["-bv", "x"], {"mode": "v", "recipients": ["x"]}),
    (["-bd"], {"mode": "d"}),
    (["-bl"], {"mode": "l"}),
    (["-bh"], {"mode": "h"}),
    (["-bH"], {"mode": "H"}),
    (["-q"], {"mode": "q", "queue_action": ""}),
    (["-q30m"], {"mode": "q", "queue_action": "interval"}),
    (["-q1h"], {"mode": "q", "queue_action": "interval"}),
    (["-qRexample.com"], {"mode": "q", "queue_action": "R", "queue_arg": "example.com"}),
    (["-qIABC123"], {"mode": "q", "queue_action": "I", "queue_arg": "ABC123"}),
    (["-C", "/etc/other"], {"config_dir": "/etc/other"}),
    (["-oA/etc/aliases2", "-bi"], {"alias_database": "/etc/aliases2", "mode": "i"}),
    (["-v"], {"verbose": 1}),
    (["-v", "-v"], {"verbose": 2}),
    (["-XV"], {"verp": True}),
    (["-O", "SMTPUTF8=yes"], {"smtputf8": True}),
    (["-O", "DeliveryMode=b"], {"smtputf8": False}),
    # ignored options, with and without values
    (["-Am", "-Ac", "-L", "label", "-U", "-h", "10", "-m", "-o7", "-o8", "-om", "-c",
      "-e", "x", "-p", "smtp", "-x", "-G", "-oeq", "-Xlog", "bob"], {"recipients": ["bob"]}),
    # options end at "--" and at the first non-option
    (["--", "-t"], {"extract": False, "recipients": ["-t"]}),
    (["bob", "-t"], {"extract": False, "recipients": ["bob", "-t"]}),
    (["-", "x"], {"recipients": ["-", "x"]}),
]


@pytest.mark.parametrize("argv, expected", GOOD)
def test_good(argv: list[str], expected: dict[str, object]) -> None:
    opts = parse_args(argv)
    for name, value in expected.items():
        assert getattr(opts, name) == value, name


BAD = [
    (["-n"], "-n option not supported"),
    (["-B", "BINARYMIME"], "-B option needs 8BITMIME or 7BIT"),
    (["-R", "some"], "-R option needs FULL or HDRS"),
    (["-bz"], "unsupported: -bz"),
    (["-b"], "option requires an argument"),
    (["-bss"], "unsupported"),
    (["-qS"], "-qS is not implemented"),
    (["-qX"], "-qX is not implemented"),
    (["-qR"], "-qR requires a site"),
    (["-qI"], "-qI requires a queue ID"),
    (["-oA"], "-oA requires pathname"),
    (["-f"], "option requires an argument -- f"),
    (["-Z"], "invalid option"),
    (["-tZ"], "invalid option"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("-", r"\-")):
        parse_args(argv)


@pytest.mark.parametrize("argv, warning", [
    (["-N", "sometimes"], "bad -N option value"),
    (["-N", "success,success"], "bad -N option value"),
    (["-V", "x" * 101], "bad -V option value"),
    (["-V", "with space"], "bad -V option value"),
])
def test_bad_value_only_warns(argv: list[str], warning: str) -> None:
    opts = parse_args(argv)
    assert any(warning in w for w in opts.warnings)
    assert opts.notify == "" and opts.envid == ""


def test_program_name_mode_is_a_default() -> None:
    assert parse_args([], "p").mode == "p"
    assert parse_args(["-bm", "x"], "p").mode == "m"


@pytest.mark.parametrize("value, expected", [
    ("never", "NEVER"), ("NEVER", "NEVER"), ("delay", "DELAY"),
    ("failure, success", "SUCCESS,FAILURE"), ("", None), ("never,delay", None), ("bogus", None),
])
def test_parse_notify(value: str, expected: str | None) -> None:
    assert parse_notify(value) == expected


def test_defaults() -> None:
    assert parse_args([]) == Options()
