"""master.cf reader: fields, defaults, -o overrides, errors with file and line."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from postpy.config.maincf import ConfigError
from postpy.config.mastercf import Service, load_master_cf, parse_master_cf

# line -> (key, private, unpriv, chroot, wakeup, maxproc, command, args, overrides)
GOOD = [
    ("127.0.0.1:2525 inet n - n - - smtpd",
     ("127.0.0.1:2525/inet", False, True, False, 0, None, "smtpd", (), ())),
    ("2525 inet y y y 0 5 smtpd",          # an inet service is never private
     ("2525/inet", False, True, True, 0, 5, "smtpd", (), ())),
    ("pickup unix n - n 60 1 pickup",
     ("pickup/unix", False, True, False, 60, 1, "pickup", (), ())),
    ("qmgr unix n - n 300? 1 qmgr",
     ("qmgr/unix", False, True, False, 300, 1, "qmgr", (), ())),
    ("cleanup unix - - n - 0 cleanup",
     ("cleanup/unix", True, True, False, 0, 1000, "cleanup", (), ())),
    ("local unix - n n - - local",
     ("local/unix", True, False, False, 0, None, "local", (), ())),
    ("x unix yes no yes - 7 cmd",
     ("x/unix", True, False, True, 0, 7, "cmd", (), ())),
    ("wake fifo n - n 60 1 pickup",
     ("wake/unix", False, True, False, 60, 1, "pickup", (), ())),
    ("relay unix - - n - - smtp -v arg2",
     ("relay/unix", True, True, False, 0, None, "smtp", ("-v", "arg2"), ())),
    ("submission inet n - n - - smtpd -o syslog_name=postpy/submission"
     " -o smtpd_tls_security_level=encrypt -osmtpd_sasl_auth_enable=yes -v",
     ("submission/inet", False, True, False, 0, None, "smtpd", ("-v",),
      (("syslog_name", "postpy/submission"), ("smtpd_tls_security_level", "encrypt"),
       ("smtpd_sasl_auth_enable", "yes")))),
    ("x unix - - n - - cmd -o empty=",
     ("x/unix", True, True, False, 0, None, "cmd", (), (("empty", ""),))),
    ("x unix - - n - - cmd\n  -o a=b\n\t-o c=d=e",
     ("x/unix", True, True, False, 0, None, "cmd", (), (("a", "b"), ("c", "d=e")))),
]


def _flat(s: Service) -> tuple[object, ...]:
    return (s.key, s.private, s.unpriv, s.chroot, s.wakeup, s.maxproc, s.command, s.args, s.overrides)


@pytest.mark.parametrize("text, expected", GOOD)
def test_parse_good(text: str, expected: tuple[object, ...]) -> None:
    (service,) = parse_master_cf(text).services
    assert _flat(service) == expected


def test_line_numbers_skip_comments_and_continuations() -> None:
    text = ("# header\n\n"
            "a unix - - n - - cmd\n"
            "  -o x=y\n"
            "# between\n"
            "b unix - - n - - cmd\n")
    services = parse_master_cf(text).services
    assert [(s.name, s.line) for s in services] == [("a", 3), ("b", 6)]


@pytest.mark.parametrize("name, expected", [
    ("2525", ("", 2525)),
    ("127.0.0.1:25", ("127.0.0.1", 25)),
    ("[::1]:587", ("::1", 587)),
    ("[192.0.2.1]:465", ("192.0.2.1", 465)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_inet_address(name: str, expected: tuple[str, int]) -> None:
    (service,) = parse_master_cf(f"{name} inet n - n - - smtpd").services
    assert service.inet_address() == expected


def test_inet_service_name() -> None:
    try:
        port = socket.getservbyname("smtp", "tcp")
    except OSError:
        pytest.skip("no services database")
    (service,) = parse_master_cf("smtp inet n - n - - smtpd").services
    assert service.inet_address() == ("", port)


BAD = [
    ("x unix - - n - - ", 1, r"expected 8 or more fields, found 7"),
    ("a unix - - n - - cmd\nb unix", 2, r"expected 8 or more fields, found 2: \"b unix\""),
    ("x tcp - - n - - cmd", 1, r"unknown service type \"tcp\""),
    ("x unix q - n - - cmd", 1, r"bad private field \"q\" \(expected y, n or -\)"),
    ("x unix - Y n - - cmd", 1, r"bad unpriv field \"Y\""),
    ("x unix - - maybe - - cmd", 1, r"bad chroot field \"maybe\""),
    ("x unix - - n abc - cmd", 1, r"bad wakeup field \"abc\""),
    ("x unix - - n ? - cmd", 1, r"bad wakeup field \"\?\""),
    ("x unix - - n -5 - cmd", 1, r"bad wakeup field \"-5\""),
    ("x unix - - n - many cmd", 1, r"bad maxproc field \"many\""),
    ("x unix - - n - \u00b2 cmd", 1, r"bad maxproc field"),
    ("x unix - - n \u00b2 - cmd", 1, r"bad wakeup field"),
    ("x unix - - n - -1 cmd", 1, r"bad maxproc field \"-1\""),
    ("x unix - - n - - cmd -o", 1, r"bad -o option \"\" \(expected name=value\)"),
    ("x unix - - n - - cmd -o novalue", 1, r"bad -o option \"novalue\""),
    ("x unix - - n - - cmd -o =x", 1, r"bad -o option \"=x\""),
    ("a unix - - n - - cmd\n\nb unix - - n - - cmd\na unix - - n - - cmd2", 4,
     r"duplicate service a/unix"),
    ("a unix - - n - - cmd\na fifo - - n - - cmd", 2, r"duplicate service a/unix"),
    ("x:abc inet n - n - - smtpd", 1, r"service x:abc: port must be a number"),
    ("127.0.0.1:0 inet n - n - - smtpd", 1, r"service 127.0.0.1:0: port must be a number from 1 to 65535"),
    ("# c\n127.0.0.1:70000 inet n - n - - smtpd", 2, r"service 127.0.0.1:70000: port must be a number from 1 to 65535"),
    ("  x unix - - n - - cmd", 1, r"logical line must not start with whitespace"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_parse_bad(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^/etc/x/master\.cf, line {line}: {message}"):
        parse_master_cf(text, "/etc/x/master.cf")


def test_same_name_different_types_are_distinct() -> None:
    cfg = parse_master_cf("25 inet n - n - - smtpd\n25 unix - - n - - smtpd\n")
    assert set(cfg.by_key()) == {"25/inet", "25/unix"}


def test_socket_path() -> None:
    pub, priv = parse_master_cf("p unix n - n - - a\nq unix - - n - - b\n").services
    assert pub.socket_path("/q") == "/q/public/p"
    assert priv.socket_path("/q") == "/q/private/q"


def test_load_master_cf(tmp_path: Path) -> None:
    (tmp_path / "master.cf").write_text("# x\npickup unix n - n 60 1 pickup\nbad line\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/master\.cf, line 3: expected 8 or more fields"):
        load_master_cf(str(tmp_path))
    (tmp_path / "master.cf").write_text("pickup unix n - n 60 1 pickup\n")
    assert [s.key for s in load_master_cf(str(tmp_path)).services] == ["pickup/unix"]


def test_load_master_cf_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"open {tmp_path}/master\.cf: no such file"):
        load_master_cf(str(tmp_path))


def test_embedded_default_master_cf_parses() -> None:
    root = Path(__file__).resolve().parents[2]
    keys = [s.key for s in load_master_cf(str(root / "etc")).services]
    assert "127.0.0.1:2525/inet" in keys and "cleanup/unix" in keys


# Malformed bytes and values: always ConfigError naming file and line.
MALFORMED = [
    (b"pickup unix n - n 60 1 pick\x00up\n", 1, "a NUL character in column 28"),
    (b"# ok\np\xffx unix n - n 60 1 pickup\n", 2, "text that is not UTF-8 in column 2"),
    (b"pickup unix n - n " + b"9" * 5000 + b" 1 pickup\n", 1, "bad wakeup field"),
    (b"pickup unix n - n 60 " + b"9" * 5000 + b" pickup\n", 1, "bad maxproc field"),
    (b"x unix n - n 60 1 pickup\n\n127.0.0.1:" + b"9" * 5000 + b" inet n - n - - smtpd\n", 3,
     "port must be a number"),
    (b"127.0.0.1:sm\xfftp inet n - n - - smtpd\n", 1, "text that is not UTF-8"),
    (b"x unix - - n - - cmd\n  -o a\x00=b\n", 2, "a NUL character"),
    (b"x unix - - n - - cmd -o =1\n", 1, "bad -o option"),
    (b"x unix - - n - - cmd -o a b=1\n", 1, "bad -o option"),
]


@pytest.mark.parametrize("data, line, message", MALFORMED)
def test_malformed_bytes_and_numbers(tmp_path: Path, data: bytes, line: int, message: str) -> None:
    (tmp_path / "master.cf").write_bytes(data)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/master\.cf, line {line}: .*{re.escape(message)}"):
        load_master_cf(str(tmp_path))


def test_nine_digit_limits_still_parse() -> None:
    (service,) = parse_master_cf("x unix - - n 999999999 999999999 cmd\n").services
    assert (service.wakeup, service.maxproc) == (999999999, 999999999)


def test_unreadable_master_cf_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "master.cf").mkdir()
    with pytest.raises(ConfigError, match=rf"^open {tmp_path}/master\.cf: Is a directory"):
        load_master_cf(str(tmp_path))
