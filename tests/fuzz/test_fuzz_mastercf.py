"""Fuzz target: master.cf (postpy.config.mastercf), read by master and
``postpy check``.

The documented error is :class:`ConfigError` naming file and line.
Properties: random and mutated files (NULs, bytes that are not UTF-8,
5,000-digit wakeup and maxproc fields, odd continuation lines, bad ports)
raise nothing else; every service that is accepted has sane fields (an
inet service a port from 1 to 65535, limits within bounds, names and
commands without NUL or undecodable bytes).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given

from fuzz.mutate import inputs
from postpy.config.maincf import ConfigError
from postpy.config.mastercf import load_master_cf

SAMPLES = [
    (Path(__file__).resolve().parents[2] / "etc" / "master.cf").read_bytes(),
    b"127.0.0.1:2525 inet n - n - - smtpd\npickup unix n - n 60 1 pickup\n",
    b"qmgr unix n - n 300? 1 qmgr\ncleanup unix - - n - 0 cleanup\n",
    b"submission inet n - n - - smtpd\n  -o syslog_name=postpy/submission\n"
    b"\t-o smtpd_tls_security_level=encrypt -osmtpd_sasl_auth_enable=yes -v\n",
    b"smtp inet n - n - - smtpd\n[::1]:25 inet n - n - - smtpd\nwake fifo n - n 60 1 pickup\n",
    b"# comment\n\n  # indented comment\nlocal unix - n n - - local\nrelay unix - - n - - smtp -o a=\n",
    b"bad inet n\n  continued\nx unix q - n - - cmd\n",
]


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-fuzz-mastercf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@given(inputs(SAMPLES))
@example(b"pickup unix n - n 60 1 pick\x00up\n")
@example(b"p\xffx unix n - n 60 1 pickup\n")
@example(b"pickup unix n - n " + b"9" * 5000 + b" 1 pickup\n")
@example(b"pickup unix n - n 60 " + b"9" * 5000 + b" pickup\n")
@example(b"127.0.0.1:" + b"9" * 5000 + b" inet n - n - - smtpd\n")
@example(b"127.0.0.1:sm\xfftp inet n - n - - smtpd\n")
@example(b"x unix - - n - - cmd -o =1 -o\n")
@example(b"  -o a=b\n")
def test_master_cf(config_dir: Path, data: bytes) -> None:
    path = config_dir / "master.cf"
    path.write_bytes(data)
    try:
        master = load_master_cf(str(config_dir))
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}, line "), exc
        return
    for service in master.services:
        for text in (service.name, service.command, *service.args, *(k + v for k, v in service.overrides)):
            assert "\0" not in text
            text.encode("utf-8")                       # no undecodable bytes
        assert 0 <= service.wakeup < 10**9
        assert service.maxproc is None or 0 < service.maxproc < 10**9
        if service.type == "inet":
            host, port = service.inet_address()
            assert 0 < port < 65536
