"""Delivery to commands (postpy.local.pipe): environment, privileges, verdicts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import wait_for
from test_local_support import (  # noqa: F401  (the *_fixture names are fixtures)
    IS_ROOT,
    acting_uid,
    base_fixture,
)

from postpy.local import pipe
from postpy.local.pipe import CommandResult
from postpy.util.privs import Identity


@pytest.fixture
def who(base: Path) -> Identity:
    uid, gid = acting_uid()
    home = base / "shared" / "home"
    home.mkdir()
    if IS_ROOT:
        os.chown(home, uid, gid)
    return Identity("tester", uid, gid, str(home), "/bin/sh")


def env_for(who: Identity) -> dict[str, str]:
    return pipe.environment(who, sender="s@remote.example", recipient="alice+x@test.example",
                            local="alice+x", extension="x", domain="test.example",
                            original="alice+x@test.example")


def test_environment_privileges_cwd_and_stdin(base: Path, who: Identity) -> None:
    out = base / "shared" / "out"
    command = f"id -u > {out}.uid; id -G > {out}.groups; pwd > {out}.cwd; env > {out}.env; cat > {out}.msg"
    result = pipe.run(command, b"From x\nSubject: s\n\nbody\n", who, env_for(who), 10)
    assert (result.status, result.output, result.timed_out) == (0, b"", False)
    assert int(Path(f"{out}.uid").read_text()) == who.uid
    if IS_ROOT:
        assert who.uid != 0
        assert Path(f"{out}.groups").read_text().split() == [str(who.gid)]
    assert Path(f"{out}.cwd").read_text().strip() == who.home
    env = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines()
               if "=" in line)
    env.pop("PWD", None), env.pop("SHLVL", None), env.pop("_", None)   # added by the shell
    assert env == {
        "HOME": who.home, "USER": "tester", "LOGNAME": "tester", "SHELL": "/bin/sh",
        "SENDER": "s@remote.example", "RECIPIENT": "alice+x@test.example", "LOCAL": "alice+x",
        "EXTENSION": "x", "DOMAIN": "test.example", "ORIGINAL_RECIPIENT": "alice+x@test.example",
        "PATH": "/usr/bin:/bin",
    }
    assert Path(f"{out}.msg").read_bytes() == b"From x\nSubject: s\n\nbody\n"


def test_home_not_accessible_falls_back_to_root_dir(base: Path, who: Identity) -> None:
    out = base / "shared" / "cwd"
    elsewhere = Identity(who.name, who.uid, who.gid, str(base / "missing"), who.shell)
    assert pipe.run(f"pwd > {out}", b"", elsewhere, env_for(who), 10).status == 0
    assert out.read_text() == "/\n"


def test_output_is_captured_and_bounded(who: Identity) -> None:
    result = pipe.run("echo to-stdout; echo to-stderr >&2; head -c 100000 /dev/zero; exit 3",
                      b"", who, env_for(who), 10)
    assert result.status == 3
    assert result.output.startswith(b"to-stdout\nto-stderr\n")
    assert len(result.output) == pipe.OUTPUT_LIMIT


def test_command_that_ignores_stdin(who: Identity) -> None:
    result = pipe.run("exit 0", b"x" * 5_000_000, who, env_for(who), 10)
    assert result.status == 0


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_time_limit_kills_the_process_group(base: Path, who: Identity) -> None:
    pidfile = base / "shared" / "background.pid"
    started = time.monotonic()
    result = pipe.run(f"sleep 30 & echo $! > {pidfile}; sleep 30", b"", who, env_for(who), 0.5)
    assert result.timed_out
    assert time.monotonic() - started < 10
    background = int(pidfile.read_text())
    wait_for(lambda: not _running(background), 5, "the background child to die")


@pytest.mark.skipif(not IS_ROOT, reason="needs root to see the refusal")
def test_refuses_to_run_as_root(base: Path) -> None:
    root = Identity("root", 0, 0, "/root", "/bin/sh")
    with pytest.raises(pipe.privs.PrivilegeError):
        pipe.run("true", b"", root, {}, 10)


@pytest.mark.parametrize("status, output, expected", [
    (0, b"ignored", None),
    (75, b"try later\n", ("4.3.0", "temporary failure. Command output: try later")),
    (67, b"no such user alice\n", ("5.1.1", "user unknown. Command output: no such user alice")),
    (69, b"", ("5.3.0", "service unavailable")),
    (71, b"", ("4.3.0", "system resource problem")),
    (1, b"oops\x00\x1b[1m\n", ("5.3.0", 'Command died with status 1: "cmd". Command output: oops [1m')),
    (1, b"4.7.1 greylisted, come back later\n", ("4.7.1", "greylisted, come back later")),
    (75, b"5.1.1 gone for good", ("5.1.1", "gone for good")),
    (1, b"5.2.2\n", ("5.2.2", 'Command failed: "cmd"')),
    (1, b"2.0.0 ok really", ("5.3.0", 'Command died with status 1: "cmd". Command output: 2.0.0 ok really')),
    (-9, b"", ("4.3.0", 'Command died with signal 9: "cmd"')),
])
def test_verdict(status: int, output: bytes, expected: tuple[str, str] | None) -> None:
    error = pipe.verdict("cmd", CommandResult(status, output))
    assert (None if error is None else (error.dsn, error.text)) == expected


def test_verdict_timeout_and_long_output() -> None:
    error = pipe.verdict("sleep 30", CommandResult(-9, b"", timed_out=True))
    assert error is not None and (error.dsn, error.text) == (
        "4.3.0", 'Command time limit exceeded: "sleep 30"')
    error = pipe.verdict("cmd", CommandResult(67, b"x" * 1000))
    assert error is not None and error.text == "user unknown. Command output: " + "x" * 256
