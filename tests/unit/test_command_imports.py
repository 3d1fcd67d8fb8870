"""The commands cron jobs and scripts run often stay cheap to start.

``sendmail`` and ``mailq``/``postqueue`` must not import asyncio, dnspython,
click or email.parser (see postpy/cli/sendmail.py).  Each case runs the real
console script of the venv in a fresh interpreter, through a small wrapper
that records ``sys.modules`` when the command has finished, against a
throwaway configuration (mail system down, empty queue).  A control case
shows that the check does see such an import when one happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FORBIDDEN = ("asyncio", "dns", "click", "email.parser")

# Runs a console script as its own __main__ and writes sys.modules afterwards.
WRAPPER = """\
import json, runpy, sys
out, script, *args = sys.argv[1:]
sys.argv = [script, *args]
status = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else 1
sys.stdout.flush()
with open(out, "w") as f:
    json.dump({"status": status, "modules": sorted(sys.modules)}, f)
"""

MESSAGE = "From: someone@example.org\nTo: root\nSubject: cheap\n\nbody\n"


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str
    modules: list[str]

    def forbidden(self) -> list[str]:
        return [m for m in self.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A throwaway configuration: queue and aliases under tmp_path."""
    etc, spool = tmp_path / "etc", tmp_path / "spool"
    etc.mkdir()
    (spool / "maildrop").mkdir(parents=True)
    (etc / "main.cf").write_text(
        f"queue_directory = {spool}\nmaillog_file = {tmp_path / 'maillog'}\n"
        "myhostname = mx.test.example\nmydestination = $myhostname, localhost\n"
        f"alias_maps = lmdb:{etc / 'aliases'}\nalias_database = lmdb:{etc / 'aliases'}\n"
        "local_recipient_maps = inline:{root=x, postmaster=x}\n")
    # The transports sendmail -bv names must be services (postpy.cli.verify).
    (etc / "master.cf").write_text("local unix - n n - - local\nsmtp unix - - n - - smtp\n")
    return etc


def run_command(config: Path, tmp_path: Path, script: str, *args: str, stdin: str = "") -> Ran:
    out = tmp_path / f"modules-{os.getpid()}-{script}.json"
    env = {**os.environ, "MAIL_CONFIG": str(config)}
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(out), str(BIN / script), *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=30)
    assert out.exists(), f"the wrapper did not finish:\n{done.stdout}\n{done.stderr}"
    record = json.loads(out.read_text())
    out.unlink()
    return Ran(record["status"], done.stdout, done.stderr, record["modules"])


def test_importing_the_command_modules(tmp_path: Path) -> None:
    code = ("import json, sys; import postpy.cli.sendmail, postpy.cli.postqueue; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    assert "postpy.cli.sendmail" in modules and "postpy.cli.postqueue" in modules
    assert Ran(0, "", "", modules).forbidden() == []


# (console script, arguments, stdin, expected status, expected start of stdout)
CASES = [
    ("sendmail", ["-bv", "root"], "", 0, "root... deliverable via local to mx.test.example"),
    ("sendmail", ["-bv", "nobody-such"], "", 67, "nobody-such... undeliverable: 5.1.1"),
    ("sendmail", ["-bv", "someone@example.org"], "", 0, "someone@example.org... deliverable via smtp"),
    ("sendmail", ["-f", "someone@example.org", "root"], MESSAGE, 0, ""),
    ("sendmail", ["-t", "-i"], MESSAGE, 0, ""),
    ("sendmail", ["-bp"], "", 0, "Mail queue is empty"),
    ("mailq", [], "", 0, "Mail queue is empty"),
    ("postqueue", ["-p"], "", 0, "Mail queue is empty"),
    ("postqueue", ["-j"], "", 0, ""),
]


@pytest.mark.parametrize(("script", "args", "stdin", "status", "stdout"), CASES,
                         ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_command_main_paths_stay_cheap(config: Path, tmp_path: Path, script: str, args: list[str],
                                       stdin: str, status: int, stdout: str) -> None:
    ran = run_command(config, tmp_path, script, *args, stdin=stdin)
    assert ran.status == status, ran.stderr
    assert ran.stdout.startswith(stdout), ran.stdout
    assert ran.forbidden() == [], f"{script} {' '.join(args)} imported {ran.forbidden()}"


def test_enqueue_really_wrote_to_the_maildrop(config: Path, tmp_path: Path) -> None:
    """The -bm case above did its work (the wrapper ran the real command)."""
    ran = run_command(config, tmp_path, "sendmail", "-f", "someone@example.org", "root", stdin=MESSAGE)
    assert ran.status == 0, ran.stderr
    assert len([n for n in os.listdir(tmp_path / "spool" / "maildrop") if not n.startswith(".")]) == 1


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """Control: a module that does import asyncio is caught by the same wrapper."""
    script = tmp_path / "uses-asyncio"
    script.write_text("import sys\nimport postpy.smtpd.session\nsys.exit(0)\n")
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(tmp_path / "out.json"), str(script)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    modules = json.loads((tmp_path / "out.json").read_text())["modules"]
    assert "asyncio" in Ran(0, "", "", modules).forbidden()
