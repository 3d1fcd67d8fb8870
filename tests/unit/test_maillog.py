"""Postfix-shaped log lines to maillog_file (postpy.util.maillog)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.util import maillog

STAMP = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d \d\d:\d\d:\d\d"


@pytest.fixture(autouse=True)
def restore_state() -> Iterator[None]:
    saved = dict(maillog._state)
    yield
    fd = maillog._state.get("fd")
    if isinstance(fd, int) and fd != saved.get("fd"):
        os.close(fd)
    maillog._state.clear()
    maillog._state.update(saved)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_line_shape(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    maillog.setup("smtpd", maillog_file=str(log), hostname="mx.example.org")
    maillog.info("4Xk2: client=localhost[127.0.0.1]")
    (line,) = lines(log)
    m = re.fullmatch(rf"({STAMP}) mx postpy/smtpd\[(\d+)\]: 4Xk2: client=localhost\[127\.0\.0\.1\]", line)
    assert m, line
    assert int(m.group(3)) == os.getpid()
    stamp = time.mktime(time.strptime(f"{time.localtime().tm_year} {m.group(1)}", "%Y %b %d %H:%M:%S"))
    assert abs(stamp - time.time()) < 120 or abs(stamp - time.time()) > 300 * 86400   # now (or New Year)


def test_day_is_space_padded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "maillog"
    maillog.setup("qmgr", maillog_file=str(log), hostname="h")
    real = time.strftime
    monkeypatch.setattr(maillog.time, "strftime",
                        lambda fmt, *a: real(fmt, time.struct_time((2025, 11, 8, 9, 5, 3, 5, 312, 0))))
    maillog.info("removed")
    assert lines(log) == [f"Nov  8 09:05:03 h postpy/qmgr[{os.getpid()}]: removed"]


@pytest.mark.parametrize("func, prefix", [
    (maillog.info, ""),
    (maillog.warning, "warning: "),
    (maillog.error, "error: "),
])
def test_severity_prefix(tmp_path: Path, func: object, prefix: str) -> None:
    log = tmp_path / "maillog"
    maillog.setup("cleanup", maillog_file=str(log), hostname="h.example")
    func("text")  # type: ignore[operator]
    assert lines(log)[0].endswith(f" h postpy/cleanup[{os.getpid()}]: {prefix}text")


def test_syslog_name_and_full_tag(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    maillog.setup("smtpd", syslog_name="postfix", maillog_file=str(log), hostname="h")
    maillog.info("a")
    maillog.setup("postpy/submission", maillog_file=str(log), hostname="h")
    maillog.info("b")
    assert re.search(r" h postfix/smtpd\[\d+\]: a$", lines(log)[0])
    assert re.search(r" h postpy/submission\[\d+\]: b$", lines(log)[1])


def test_one_event_one_line(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    maillog.setup("local", maillog_file=str(log), hostname="h")
    maillog.info("first\nsecond\r\nthird")
    maillog.info("caf\u00e9 \udcff")
    got = lines(log)
    assert len(got) == 2
    assert got[0].endswith(": first second  third")
    assert got[1].endswith(": caf\u00e9 ?")


def test_appends_to_existing_file(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text("old line\n")
    maillog.setup("pickup", maillog_file=str(log), hostname="h")
    maillog.info("new")
    assert lines(log)[0] == "old line" and lines(log)[1].endswith(": new")


def test_stderr_echo_for_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "maillog"
    maillog.setup("postsuper", maillog_file=str(log), hostname="h", stderr=True)
    maillog.info("quiet")
    maillog.warning("loud")
    maillog.error("louder")
    assert capsys.readouterr().err == "postsuper: warning: loud\npostsuper: error: louder\n"
    assert len(lines(log)) == 3


def test_fatal_logs_and_exits(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    maillog.setup("smtpd", maillog_file=str(log), hostname="h")
    with pytest.raises(SystemExit) as info:
        maillog.fatal("broken invariant", status=75)
    assert info.value.code == 75
    assert lines(log)[0].endswith(": fatal: broken invariant")


def test_setup_from_config(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    cfg = Config(str(tmp_path), explicit={"maillog_file": str(log), "myhostname": "mx.test.example",
                                         "syslog_name": "mta"})
    maillog.setup_from_config("bounce", cfg)
    maillog.info("x")
    assert re.fullmatch(rf"{STAMP} mx mta/bounce\[\d+\]: x", lines(log)[0])


def test_setup_again_switches_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    maillog.setup("a", maillog_file=str(one), hostname="h")
    maillog.info("1")
    maillog.setup("a", maillog_file=str(two), hostname="h")
    maillog.info("2")
    assert [line[-1] for line in lines(one)] == ["1"]
    assert [line[-1] for line in lines(two)] == ["2"]


def test_unwritable_file_warns_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maillog.setup("smtpd", maillog_file=str(tmp_path / "no" / "such" / "dir"), hostname="h")
    maillog.info("dropped")                        # must not raise
    assert "warning: open " in capsys.readouterr().err


def test_lines_from_many_processes_never_interleave(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    maillog.setup("smtpd", maillog_file=str(log), hostname="h")
    children = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:                               # child: write and leave at once
            try:
                for i in range(200):
                    maillog.info(f"child {n} line {i} " + "x" * 300)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    got = lines(log)
    assert len(got) == 800
    for line in got:
        assert re.fullmatch(rf"{STAMP} h postpy/smtpd\[\d+\]: child \d line \d+ x{{300}}", line), line


def test_bytes_that_were_not_utf8_become_question_marks(tmp_path: Path) -> None:
    """A client's non-UTF-8 bytes (surrogate escapes after decoding) are logged as
    "?", as Postfix does, not as backslash escapes; valid UTF-8 is kept."""
    log = tmp_path / "maillog"
    maillog.setup("smtpd", maillog_file=str(log), hostname="h")
    helo = b"\xf7\xfe caf\xc3\xa9\x1b[31m".decode("utf-8", "surrogateescape")
    maillog.info(f"connect helo=<{helo}>")
    (line,) = lines(log)
    assert line.endswith(": connect helo=<?? caf\u00e9?[31m>"), line
    assert "\\udc" not in line


def test_command_that_may_not_write_the_log_falls_back_quietly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_open = os.open

    def denied(path: str, *args: object) -> int:
        if path == str(tmp_path / "maillog"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(maillog.os, "open", denied)
    maillog.setup("newaliases", maillog_file=str(tmp_path / "maillog"), stderr=True)
    assert capsys.readouterr().err == ""       # a command: syslog instead, without a word
    assert maillog._state["syslog"]
    maillog.setup("smtpd", maillog_file=str(tmp_path / "maillog"))
    assert capsys.readouterr().err == f"postpy/smtpd: warning: open {tmp_path}/maillog: Permission denied\n"
