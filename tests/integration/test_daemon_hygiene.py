"""Daemon hygiene: descriptors 0-2 are never left closed, and a daemon that
dies of an uncaught exception leaves its traceback in the mail log.

A program started with 0-2 closed would hand those numbers to the maillog,
a queue connection or a lookup table, where any stray write to stdout or
stderr would land.  Real processes throughout: a real master started with
0-2 closed, real launchers from ``libexec/``, ``/proc/<pid>/fd`` to look.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BIN, IS_ROOT, MTA, ROOT, wait_for

DAEMONS = sorted(p.name for p in (ROOT / "libexec").iterdir() if p.is_file())


def _close_std_fds() -> None:
    """preexec_fn: start the program with descriptors 0, 1 and 2 closed."""
    for fd in (0, 1, 2):
        os.close(fd)


def std_fds(pid: int) -> list[str]:
    """Where descriptors 0-2 of ``pid`` point ("" for a closed one)."""
    targets = []
    for fd in (0, 1, 2):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            targets.append("")
    return targets


def start_master_with_closed_fds(mta: MTA) -> None:
    mta.proc = subprocess.Popen([str(BIN / "postpy"), "start-fg"], env=mta.env(),
                                preexec_fn=_close_std_fds, start_new_session=True)
    wait_for(lambda: "daemon started" in mta.log() or mta.proc.poll() is not None, 20, "master to start")
    assert mta.proc.poll() is None, f"master died (status {mta.proc.returncode}):\n{mta.log()}"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to create a Unix user for local delivery")
def test_master_started_with_closed_fds_gives_daemons_dev_null(mta_factory, unix_users) -> None:
    user = unix_users()
    mta = mta_factory(start=False, home_mailbox="Maildir/")
    start_master_with_closed_fds(mta)
    assert std_fds(mta.master_pid()) == ["/dev/null"] * 3
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        assert client.sendmail("a@example.org", [f"{user.pw_name}@mx.test.example"],
                               "Subject: fds\r\n\r\nhello\r\n") == {}
    mta.wait_log(rf"to=<{user.pw_name}@mx.test.example>, relay=local, .*status=sent", 20)
    children = mta.children()
    programs = {name for args in children.values() for name in DAEMONS if f"/{name}" in args}
    assert {"smtpd", "cleanup", "qmgr", "local"} <= programs, children
    for pid, args in children.items():
        assert std_fds(pid) == ["/dev/null"] * 3, args
    assert "fatal" not in mta.log()


def _launch(mta: MTA, program: str, env: dict[str, str], **popen: object) -> subprocess.Popen[bytes]:
    """Run libexec/<program> as master would, without master."""
    full = {"PATH": os.environ.get("PATH", ""), "POSTPY_CONFIG": str(mta.config_dir),
            "POSTPY_LISTEN_FDS": "0", "POSTPY_SERVICE": program, **env}
    return subprocess.Popen([sys.executable, str(ROOT / "libexec" / program), "-o", "max_idle=30s"],
                            env=full, **popen)  # type: ignore[call-overload]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def prepared_tree(mta_factory: Callable[..., MTA]) -> MTA:
    mta = mta_factory(start=False)
    mta.run("postpy", "check", check=True)     # the queue layout
    return mta


@pytest.mark.parametrize("program", DAEMONS)
def test_launcher_opens_dev_null_on_closed_std_fds(prepared_tree: MTA, program: str) -> None:
    proc = _launch(prepared_tree, program, {}, preexec_fn=_close_std_fds)
    try:
        # The skeleton sets the title once it has read main.cf and opened the log.
        wait_for(lambda: proc.poll() is not None
                 or Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"postpy/"),
                 15, f"{program} to set up")
        assert proc.poll() is None, prepared_tree.log()
        assert std_fds(proc.pid) == ["/dev/null"] * 3
    finally:
        _stop(proc)


def test_uncaught_exception_reaches_the_maillog_with_its_traceback(prepared_tree: MTA) -> None:
    # A listen-fd count that is not a number: the skeleton's int() raises
    # ValueError before it has set up logging, the worst case.
    proc = _launch(prepared_tree, "showq", {"POSTPY_LISTEN_FDS": "many"},
                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    found = prepared_tree.wait_log(r"postpy/showq\[(\d+)\]: fatal: showq: ValueError: .*'many'")
    pid = found.group(1)
    lines = [line for line in prepared_tree.log().splitlines() if f"postpy/showq[{pid}]: traceback: " in line]
    text = "\n".join(lines)
    assert "traceback: Traceback (most recent call last):" in lines[0], text
    assert 'traceback:   File "' in text and "skeleton.py" in text, text
    assert lines[-1].endswith("ValueError: invalid literal for int() with base 10: 'many'"), text
    assert b"Traceback" not in out     # the log has it; stderr is nobody's



# Records every module imported while the effective uid is not root: in a
# daemon, an import after the privilege drop (local: while acting as a user).
AUDIT_HOOK = '''\
import os, sys
def _after_drop(event, args):
    if event == "import" and os.geteuid() != 0 and args[0] not in sys.modules:
        try:
            with open({log!r}, "a") as fh:
                fh.write(os.path.basename(sys.argv[0] if sys.argv else "") + " " + args[0] + "\\n")
        except Exception:
            pass
sys.addaudithook(_after_drop)
'''


@pytest.mark.skipif(not IS_ROOT, reason="needs root: daemons drop privileges only when started as root")
def test_daemons_import_nothing_after_dropping_privileges(mta_factory, unix_users, monkeypatch) -> None:
    import importlib.util
    import shutil
    import tempfile

    hook_dir = Path(tempfile.mkdtemp(prefix="postpy-audit-"))
    try:
        os.chmod(hook_dir, 0o755)
        log = hook_dir / "imports"
        log.touch(mode=0o666)
        os.chmod(log, 0o666)
        (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK.format(log=str(log)))
        monkeypatch.setenv("PYTHONPATH", str(hook_dir))     # master passes it to its daemons
        user = unix_users()
        far = mta_factory(home_mailbox="Maildir/", myhostname="far.test.example")
        mta = mta_factory(start=False, home_mailbox="Maildir/", mydestination="$myhostname, localhost",
                          relayhost=f"[127.0.0.1]:{far.port}", smtpd_sasl_auth_enable="yes",
                          smtpd_tls_auth_only="no")
        assert mta.run("postpy", "passwd", "add", "alice", input="s3cret-pw\n").returncode == 0
        mta.start()
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
            client.login("alice", "s3cret-pw")                        # smtpd: SASL
            client.sendmail("a@example.org", [f"{user.pw_name}@mx.test.example",   # local
                                              f"{user.pw_name}@test.example"],    # smtp
                            "Subject: imports\r\n\r\nhello\r\n")
        done = mta.run("sendmail", "nosuchuser@mx.test.example",                          # pickup, bounce
                       input="Subject: unknown\n\nhello\n")
        assert done.returncode == 0, done.stderr
        mta.wait_log(rf"to=<{user.pw_name}@mx.test.example>, relay=local, .*status=sent", 20)
        mta.wait_log(rf"to=<{user.pw_name}@test.example>, relay=127.0.0.1.*status=sent", 20)
        mta.wait_log(r"postpy/bounce\[\d+\]: .*sender non-delivery notification", 20)
        far.wait_log(rf"to=<{user.pw_name}@test.example>, relay=local, .*status=sent", 20)
        late = sorted({line for line in log.read_text().splitlines()
                       if line.split()[0] in DAEMONS and importlib.util.find_spec(line.split()[1]) is not None})
        assert late == [], "modules imported after the privilege drop:\n" + "\n".join(late)
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: postpy check runs the interpreter as mail_owner")
def test_check_fails_when_mail_owner_cannot_run_the_interpreter(prepared_tree: MTA) -> None:
    import shutil
    import site
    import tempfile

    hidden = Path(tempfile.mkdtemp(prefix="postpy-python-"))     # mode 0700: only root gets in
    try:
        python = hidden / "python3"
        python.symlink_to(os.path.realpath(sys.executable))
        env = dict(prepared_tree.env(), PYTHONPATH=os.pathsep.join([str(ROOT), *site.getsitepackages()]))
        done = subprocess.run([str(python), "-m", "postpy.cli.postpy_cmd", "check"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 78, done.stderr
        assert (f"error: mail_owner postpy cannot run {python}: Permission denied: install postpy "
                "with a Python that postpy can read (make install INSTALL_PYTHON=/usr/bin/python3), "
                f"or make {hidden} readable by postpy") in done.stderr, done.stderr
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
    done = prepared_tree.run("postpy", "check")      # the interpreter the tests use: fine
    assert done.returncode == 0 and "cannot" not in done.stderr, done.stderr


@pytest.mark.parametrize("name, data, message", [
    ("master.cf", b"pickup unix n - n 60 1 pick\x00up\n", "line 1: a NUL character in column 28"),
    ("master.cf", b"# x\np\xffx unix n - n 60 1 pickup\n", "line 2: text that is not UTF-8 in column 2"),
    ("master.cf", b"pickup unix n - n 60 " + b"9" * 5000 + b" pickup\n", "line 1: bad maxproc field"),
    ("main.cf", b"max_use = " + b"9" * 5000 + b"\n", "line 1: bad numerical configuration: max_use"),
    ("main.cf", b"myhostname = a\x00b\n", "line 1: a NUL character in column 15"),
])
def test_check_and_start_report_malformed_files_by_line(mta_factory: Callable[..., MTA], name: str,
                                                        data: bytes, message: str) -> None:
    mta = mta_factory(start=False)
    path = mta.config_dir / name
    if name == "main.cf":
        data = path.read_bytes() + data
        message = message.replace("line 1", f"line {len(path.read_bytes().splitlines()) + 1}")
    path.write_bytes(data)
    for command in ("check", "start"):
        done = mta.run("postpy", command)
        assert done.returncode == 78, (command, done.stderr)
        assert f"{path}, {message}" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
