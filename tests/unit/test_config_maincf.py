"""main.cf reader: syntax, expansion, typed getters, warnings (postpy.config.maincf)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postpy.config.maincf import (
    DEFAULT_CONFIG_DIR,
    Config,
    ConfigError,
    config_dir_from,
    load_config,
    parse_main_cf,
    parse_time,
    split_list,
)

# -- syntax -------------------------------------------------------------------

GOOD = [
    ("a = b", [("a", "b", 1)]),
    ("a=b", [("a", "b", 1)]),
    ("a   =   b c   \t", [("a", "b c", 1)]),
    ("a =", [("a", "", 1)]),
    ("a = x = y", [("a", "x = y", 1)]),
    ("a = $b ${c} $(d)", [("a", "$b ${c} $(d)", 1)]),
    ("a = b\n  c\n\td", [("a", "b c d", 1)]),
    ("a = b\n# comment between\n  c", [("a", "b c", 1)]),
    ("a = b\n\n   \n  c", [("a", "b c", 1)]),
    ("a = b\n    # indented comment\n  c", [("a", "b c", 1)]),
    ("# head\n\na = 1\nb = 2\n", [("a", "1", 3), ("b", "2", 4)]),
    ("a = 1\n  2\nb = 3\n  4\n", [("a", "1 2", 1), ("b", "3 4", 3)]),
    ("a = 1\na = 2", [("a", "1", 1), ("a", "2", 2)]),
    ("a = b\r\nc = d\r\n", [("a", "b", 1), ("c", "d", 2)]),
    ("A_9 = x", [("A_9", "x", 1)]),
    ("a = b # not a comment", [("a", "b # not a comment", 1)]),
    ("a = b\x0cc\u2028d\x1ce\nf = 1", [("a", "b\x0cc\u2028d\x1ce", 1), ("f", "1", 2)]),
    ("\x0c\na = 1", [("a", "1", 2)]),
    ("", []),
    ("# only\n  # comments\n", []),
]


@pytest.mark.parametrize("text, expected", GOOD)
def test_parse_good(text: str, expected: list[tuple[str, str, int]]) -> None:
    assert [(s.name, s.value, s.line) for s in parse_main_cf(text)] == expected


BAD = [
    ("foo", 1, r"missing '=' after attribute name: \"foo\""),
    ("a = 1\n\n# c\nbar baz", 4, r"missing '=' after attribute name: \"bar baz\""),
    ("  a = 1", 1, r"logical line must not start with whitespace"),
    ("# c\n\t x", 2, r"logical line must not start with whitespace"),
    ("a b = c", 1, r"bad parameter name: \"a b\""),
    ("= c", 1, r"bad parameter name: \"\""),
    ("a-b = c", 1, r"bad parameter name: \"a-b\""),
    ("a.b = c", 1, r"bad parameter name"),
    ("a = 1\n  2\n$x = 3", 3, r"bad parameter name: \"\$x\""),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_parse_bad_names_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^/etc/x/main\.cf, line {line}: {message}"):
        parse_main_cf(text, "/etc/x/main.cf")


def test_load_config_error_names_the_real_file(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("# ok\nmyhostname = a.example\n\nnonsense line\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path}/main.cf, line 4: missing '='")


def test_load_config_missing_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(str(tmp_path))
    assert cfg.explicit == {}
    assert cfg.get("queue_directory") == "/var/spool/postpy"
    assert cfg.get("config_directory") == str(tmp_path)
    assert cfg.main_cf == str(tmp_path / "main.cf")


def test_load_config_later_setting_wins_and_lines(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("relayhost = a\n\nrelayhost = b\n  c\n")
    cfg = load_config(str(tmp_path))
    assert cfg.get("relayhost") == "b c"
    assert cfg.lines["relayhost"] == 3


def test_unknown_parameter_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("myhostname = h.example\nmy_nets = 10.0.0.0/8\n")
    cfg = load_config(str(tmp_path))
    assert cfg.warnings == [f"{tmp_path}/main.cf, line 2: unused parameter: my_nets=10.0.0.0/8"]
    assert cfg.get("my_nets") == "10.0.0.0/8"
    assert cfg.is_known("my_nets") and not cfg.is_known("other")


def test_config_directory_cannot_be_set(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("config_directory = /elsewhere\n")
    cfg = load_config(str(tmp_path))
    assert cfg.get("config_directory") == str(tmp_path)
    assert len(cfg.warnings) == 1 and "config_directory cannot be set" in cfg.warnings[0]


def test_overrides(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("relayhost = a\n")
    cfg = load_config(str(tmp_path), overrides={"relayhost": "b", "max_use": "5"})
    assert cfg.get("relayhost") == "b" and cfg.get_int("max_use") == 5
    copy = cfg.with_overrides({"relayhost": "c"})
    assert copy.get("relayhost") == "c" and cfg.get("relayhost") == "b"


def test_config_dir_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    assert config_dir_from(None) == DEFAULT_CONFIG_DIR
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path / "env"))
    assert config_dir_from(None) == str(tmp_path / "env")
    assert config_dir_from(str(tmp_path / "cli")) == str(tmp_path / "cli")
    monkeypatch.chdir(tmp_path)
    assert config_dir_from("rel") == str(tmp_path / "rel")


# -- expansion ----------------------------------------------------------------

VALUES = {"a": "va", "b": "vb", "e": "", "c": "$a-$b", "n": "${a}x"}

EXPANSION = [
    ("$a", "va"),
    ("${a}", "va"),
    ("$(a)", "va"),
    ("x$a.y", "xva.y"),
    ("$a$b", "vavb"),
    ("${a}b", "vab"),
    ("$c", "va-vb"),
    ("$n", "vax"),
    ("${a?yes}", "yes"),
    ("${e?yes}", ""),
    ("${a:no}", ""),
    ("${e:no}", "no"),
    ("${a?$b}", "vb"),
    ("${e:${b}!}", "vb!"),
    ("${a?{yes}}", "yes"),
    ("${a?{$b and $(b)}}", "vb and vb"),
    ("${e:{no}}", "no"),
    ("${a?x}${e:y}", "xy"),
    ("${undefined?x}", ""),
    ("${undefined:x}", "x"),
    ("$undefined", ""),
    ("$$", "$"),
    ("$$a", "$a"),
    ("a$", "a$"),
    ("$ a", "$ a"),
    ("${a", "${a"),
    ("no refs", "no refs"),
]


@pytest.mark.parametrize("text, expected", EXPANSION)
def test_expand(text: str, expected: str) -> None:
    cfg = Config("/cfg", explicit=dict(VALUES))
    assert cfg.expand(text) == expected


def test_expand_extra_names_first() -> None:
    cfg = Config("/cfg", explicit=dict(VALUES))
    assert cfg.expand("$home/$a", {"home": "/home/u", "a": "local"}) == "/home/u/local"


def test_defaults_expand_through_settings() -> None:
    cfg = Config("/cfg", explicit={"myhostname": "mx.example.org", "mail_name": "Test"})
    assert cfg.get("smtpd_banner") == "mx.example.org ESMTP Test"
    assert cfg.get("mydomain") == "example.org"
    assert cfg.get("myorigin") == "mx.example.org"
    assert cfg.get_list("mydestination") == ["mx.example.org", "localhost.example.org", "localhost"]
    assert cfg.get("data_directory") == "/var/spool/postpy/data"


def test_mydomain_of_a_single_label_host() -> None:
    assert Config("/c", explicit={"myhostname": "localhost"}).get("mydomain") == "localdomain"


LOOPS = [
    ({"a": "$b", "b": "$a"}, "a", "parameter a: recursion loop in expansion: a -> b -> a"),
    ({"a": "$a"}, "a", "parameter a: recursion loop in expansion: a -> a"),
    ({"a": "x ${a?y}"}, "a", "parameter a: recursion loop in expansion: a -> a"),
    ({"a": "$b", "b": "${c}", "c": "$(b)"}, "a", "parameter a: recursion loop in expansion: a -> b -> c -> b"),
    ({"myorigin": "$myhostname", "myhostname": "$myorigin"}, "myorigin",
     "parameter myorigin: recursion loop in expansion: myorigin -> myhostname -> myorigin"),
]


@pytest.mark.parametrize("values, name, message", LOOPS)
def test_expansion_loop_error(values: dict[str, str], name: str, message: str) -> None:
    cfg = Config("/cfg", explicit=values)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        cfg.get(name)


def test_repeated_reference_is_not_a_loop() -> None:
    cfg = Config("/cfg", explicit={"a": "$b $b ${b?$b}", "b": "x"})
    assert cfg.get("a") == "x x x"


def test_unknown_parameter_get() -> None:
    with pytest.raises(ConfigError, match="unknown parameter: nosuch"):
        Config("/cfg").get("nosuch")


# -- typed getters --------------------------------------------------------------

TYPED = [
    ("get_int", "process_limit", "50", 50),
    ("get_int", "process_limit", " 7 ", 7),
    ("get_int", "process_limit", "+3", 3),
    ("get_int", "process_limit", "abc", "bad numerical configuration: process_limit = abc"),
    ("get_int", "process_limit", "", "bad numerical configuration: process_limit = "),
    ("get_int", "process_limit", "1_000", "bad numerical configuration"),
    ("get_int", "process_limit", "\u0663", "bad numerical configuration"),
    ("get_int", "process_limit", "1.5", "bad numerical configuration"),
    ("get_int", "process_limit", "0", "parameter process_limit: value 0 is below the minimum 1"),
    ("get_int", "process_limit", "-4", "below the minimum 1"),
    ("get_int", "ipc_max_frame", "100", "below the minimum 1024"),
    ("get_size", "message_size_limit", "0", 0),
    ("get_size", "message_size_limit", "10m", "bad numerical configuration"),
    ("get_bool", "biff", "yes", True),
    ("get_bool", "biff", "NO", False),
    ("get_bool", "biff", " no ", False),
    ("get_bool", "biff", "maybe", "bad boolean configuration: biff = maybe"),
    ("get_bool", "biff", "", "bad boolean configuration"),
    ("get_time", "max_idle", "300s", 300.0),
    ("get_time", "max_idle", "5m", 300.0),
    ("get_time", "max_idle", "2h", 7200.0),
    ("get_time", "max_idle", "1d", 86400.0),
    ("get_time", "max_idle", "1w", 604800.0),
    ("get_time", "max_idle", "10", 10.0),
    ("get_time", "max_idle", "1.5m", 90.0),
    ("get_time", "max_idle", " 3 s ", 3.0),
    ("get_time", "max_idle", "5x", "bad time value for parameter max_idle: '5x'"),
    ("get_time", "max_idle", "", "bad time value"),
    ("get_time", "max_idle", "-5s", "bad time value"),
    ("get_time", "max_idle", "s", "bad time value"),
    ("get_time", "max_idle", "\u0663s", "bad time value"),
    ("get_list", "mynetworks", "a, b c,,d\te", ["a", "b", "c", "d", "e"]),
    ("get_list", "mynetworks", "", []),
    ("get_list", "alias_maps", "inline:{a=b, c=d}, lmdb:/x", ["inline:{a=b, c=d}", "lmdb:/x"]),
    ("get_path", "queue_directory", "/a//b/../c/", "/a/c"),
    ("get_path", "maillog_file", "", ""),
]


@pytest.mark.parametrize("getter, name, value, expected", TYPED)
def test_typed_getters(getter: str, name: str, value: str, expected: object) -> None:
    cfg = Config("/cfg", explicit={name: value})
    method = getattr(cfg, getter)
    if isinstance(expected, str) and getter not in ("get_path",):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            method(name)
    else:
        assert method(name) == expected


def test_typed_getter_expands_first() -> None:
    cfg = Config("/cfg", explicit={"base": "7", "process_limit": "${base}0", "max_idle": "${base}m"})
    assert cfg.get_int("process_limit") == 70
    assert cfg.get_time("max_idle") == 420.0


@pytest.mark.parametrize("text, expected", [
    ("30", 30.0), ("2m", 120.0), ("x", None), ("1 d", 86400.0),
])
def test_parse_time(text: str, expected: float | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match="bad time value for parameter t"):
            parse_time(text, "t")
    else:
        assert parse_time(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("", []),
    (" , ,", []),
    ("a,b", ["a", "b"]),
    ("a {b c} d", ["a", "{b c}", "d"]),
    ("x:{a, {b c}}, y", ["x:{a, {b c}}", "y"]),
    ("unbalanced}", ["unbalanced}"]),
])
def test_split_list(text: str, expected: list[str]) -> None:
    assert split_list(text) == expected


def test_validate_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("# c\nmax_use = lots\nbiff = perhaps\nqueue_run_delay = 5q\n")
    errors = load_config(str(tmp_path)).validate()
    path = f"{tmp_path}/main.cf"
    assert errors == [
        f"{path}, line 3: bad boolean configuration: biff = perhaps",
        f"{path}, line 2: bad numerical configuration: max_use = lots",
        f"{path}, line 4: bad time value for parameter queue_run_delay: '5q'",
    ]


def test_validate_reports_loops(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("myorigin = $relayhost\nrelayhost = $myorigin\n")
    errors = load_config(str(tmp_path)).validate()
    assert any("line 1: parameter myorigin: recursion loop" in e for e in errors)


def test_defaults_validate_cleanly(tmp_path: Path) -> None:
    assert load_config(str(tmp_path)).validate() == []


# Malformed bytes and values: ConfigError naming file and line, from the
# reader (bytes) or from validate() (values), never another exception.
@pytest.mark.parametrize("data, line, message", [
    (b"# \xff in a comment is fine\nmyhostname = a\x00b\n", 2, "a NUL character in column 15"),
    (b"myhostname = caf\xe9\n", 1, "text that is not UTF-8 in column 17"),
    (b"a = 1\nb = 2\n  continued \xff\n", 2, "not UTF-8"),     # reported at the logical line's first line
])
def test_malformed_bytes(tmp_path: Path, data: bytes, line: int, message: str) -> None:
    (tmp_path / "main.cf").write_bytes(data)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/main\.cf, line \d+: .*{re.escape(message)}"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("setting, message", [
    ("max_use = " + "9" * 5000, "bad numerical configuration: max_use = 999"),
    ("message_size_limit = -" + "9" * 5000, "bad numerical configuration: message_size_limit = -999"),
    ("max_idle = " + "9" * 5000 + "s", "bad time value for parameter max_idle"),
    ("max_idle = 1." + "9" * 5000, "bad time value for parameter max_idle"),
    ("max_use = 9999999999999999999", "bad numerical configuration"),
])
def test_huge_numbers_are_config_errors(tmp_path: Path, setting: str, message: str) -> None:
    (tmp_path / "main.cf").write_text(f"# x\n{setting}\n")
    errors = load_config(str(tmp_path)).validate()
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path}/main.cf, line 2: {message}"), errors


def test_a_default_that_refers_to_a_bad_setting_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("# x\n\ndefault_process_limit = " + "9" * 30 + "\n")
    errors = load_config(str(tmp_path)).validate()
    assert errors and all(e.startswith(f"{tmp_path}/main.cf, line 3: ") for e in errors), errors


def test_deep_expansion_chain_is_a_config_error() -> None:
    explicit = {f"p{i}": f"$p{i + 1}" for i in range(500)}
    with pytest.raises(ConfigError, match="expansion nested deeper than 100"):
        Config("/nonexistent", explicit).get("p0")


def test_loop_through_a_derived_default_names_the_line(tmp_path: Path) -> None:
    """mydomain comes from myhostname: a loop in myhostname is blamed on its line."""
    (tmp_path / "main.cf").write_text("# x\nmyhostname = $myhostname.example\n")
    errors = load_config(str(tmp_path)).validate()
    assert errors and all(e.startswith(f"{tmp_path}/main.cf, line 2: ") for e in errors), errors
