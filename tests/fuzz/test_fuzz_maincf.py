"""Fuzz target: main.cf (postpy.config.maincf), read by every program.

main.cf is read from a file with ``surrogateescape``; its documented error
is :class:`ConfigError` naming file and line.  Properties: reading random
and mutated files (NULs, bytes that are not UTF-8, 5,000-digit numbers,
odd continuation lines) raises nothing else; every error names the file;
every typed value (integers, sizes, times, booleans, lists) either converts
or is reported by ``validate()`` with file and line, never raises anything
but ConfigError.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.mutate import inputs
from postpy.config.maincf import ConfigError, load_config, parse_time
from postpy.config.params import BY_NAME

SAMPLES = [
    b"myhostname = mx.example.org\nmydestination = $myhostname, localhost\n",
    b"# comment\nqueue_minfree = 20000000\nmessage_size_limit = 10240000\n",
    b"maximal_queue_lifetime = 5d\nbounce_queue_lifetime = 5d\nmax_idle = 100s\n",
    b"smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nbiff = off\n",
    b"alias_maps = lmdb:/etc/aliases,\n    inline:{a=b, c=d}\n\t texthash:/x\n",
    b"mynetworks = 127.0.0.0/8 [::1]/128\nrelayhost = [127.0.0.1]:2525\n",
    b"a = ${b?{x}} ${c:y} $(d) $$ $e\nb = 1\nd = $a\n",
    b"default_process_limit = 100\nmax_use = 100\nsmtpd_timeout = 300s\n",
    b"  leading whitespace\nname without equals\n= no name\n",
    b"x = 1\r\ny = 2\r\n\n\n  # between\n  continued\n",
]
FILE_LINE = re.compile(r"main\.cf, line \d+: ")
TYPED = sorted(name for name, param in BY_NAME.items() if param.type in ("int", "size", "time", "bool"))


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-fuzz-maincf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def check(config_dir: Path, data: bytes) -> None:
    (config_dir / "main.cf").write_bytes(data)
    try:
        cfg = load_config(str(config_dir))
    except ConfigError as exc:
        assert str(exc).startswith(f"{config_dir}/main.cf, line "), exc
        return
    for error in cfg.validate():           # every parameter, through its typed getter
        assert error.startswith(f"{config_dir}/main.cf, line "), error


@given(inputs(SAMPLES))
@example(b"x = a\x00b\n")
@example(b"x = \xff\xfe\n")
@example(b"max_use = " + b"9" * 5000 + b"\n")
@example(b"max_idle = " + b"9" * 5000 + b"s\n")
@example(b"max_idle = 1." + b"9" * 5000 + b"\n")
@example(b"message_size_limit = -" + b"9" * 5000 + b"\n")
@example(b"a = $b\n" + b"".join(b"b%d = $b%d\n" % (i, i + 1) for i in range(400)).replace(b"b0", b"b"))
@example(b"\tcontinued first\n")
@example(b"myhostname = mx.example.org\x01mydestination = $myhostname")   # mydomain derives from it
def test_main_cf(config_dir: Path, data: bytes) -> None:
    check(config_dir, data)


NUMBERS = st.one_of(
    st.sampled_from(["9" * 5000, "-" + "9" * 5000, "1e9", "0x10", "1_000", "٣", "1.5", "", " ", "+1",
                     "18446744073709551616", "9" * 19, "5d", "1w", "1.0000000001s", "yes", "off"]),
    st.text(alphabet="0123456789.+-smhdw _", max_size=40),
    st.text(max_size=20))


@given(st.sampled_from(TYPED), NUMBERS)
def test_typed_values(config_dir: Path, name: str, value: str) -> None:
    """Each typed parameter set to a random or huge value: converts or names file and line."""
    check(config_dir, f"{name} = {value}\n".encode("utf-8", "surrogateescape"))


@given(NUMBERS)
def test_parse_time(value: str) -> None:
    try:
        seconds = parse_time(value)
    except ConfigError:
        return
    assert 0 <= seconds < float("inf")
