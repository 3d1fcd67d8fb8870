"""mailq / sendmail -bp / postqueue -p against a real system: the output is
compared line by line with a template written from COMPAT.md section 2."""

from __future__ import annotations

import calendar
import os
import pwd
import subprocess
import sys
import syslog  # noqa: F401  (see postqueue_as)
import tempfile
import time

import pytest
from conftest import BIN, IS_ROOT, MAIL_OWNER

import postpy.cli.postqueue  # noqa: F401  (imported before forking: see postqueue_as)
import postpy.ipc.messages  # noqa: F401
import postpy.mail.authorized  # noqa: F401
import postpy.mail.queue_listing  # noqa: F401
from postpy.queue import qfile

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  -       -       n       -       0       cleanup
showq     unix  n       -       n       -       -       showq
"""

# Long queue IDs (postpy's); TZ=UTC; "|" marks the end of a line.
TEMPLATE = """\
----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------|
4cBfXL5Jc8z2FqA*      2143 Mon Aug 25 10:11:12 alice@example.org|
                                               bob@example.net|
|
4cBfXL5Jc8z2FqB       5120 Sun Aug 24 10:11:12 root@host.example|
                (connect to mx.example.com[192.0.2.10]:25: Connection refused)|
                                               carol@example.com|
                                               dave@example.com|
|
4cBfXL5Jc8z2FqC!       812 Mon Aug 25 08:53:20 MAILER-DAEMON|
                                               postmaster@example.org|
|
-- 7 Kbytes in 3 Requests.|
"""
REFUSED = "connect to mx.example.com[192.0.2.10]:25: Connection refused"


def expected_lines() -> list[str]:
    return [line.removesuffix("|") for line in TEMPLATE.splitlines()]


def epoch(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def plant(mta, queue: str, qid: str, sender: str, rcpts: list[str], arrival: str, size: int,
          log: list[qfile.LogEntry] = ()) -> str:
    """A queue file as qmgr would have left it, owned by mail_owner."""
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in rcpts], arrival=epoch(arrival))
    path = qfile.write_queue_file(str(mta.queue_dir / queue), qid, env, b"x" * size, durable=False)
    if log:
        qfile.append_log(path, list(log), durable=False)
    if IS_ROOT:
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def plant_example(mta) -> None:
    plant(mta, "active", "4cBfXL5Jc8z2FqA", "alice@example.org", ["bob@example.net"],
          "2025-08-25 10:11:12", 2143)
    plant(mta, "deferred", "4cBfXL5Jc8z2FqB", "root@host.example",
          ["carol@example.com", "dave@example.com", "done@example.com"], "2025-08-24 10:11:12", 5120,
          [qfile.LogEntry(0, "delayed", "4.4.1", REFUSED), qfile.LogEntry(1, "delayed", "4.4.1", REFUSED)])
    path = mta.queue_dir / "deferred" / "4cBfXL5Jc8z2FqB"
    env = qfile.read_envelope(str(path))
    qfile.set_status(str(path), [env.recipients[2]], qfile.DONE, durable=False)   # delivered: not shown
    plant(mta, "hold", "4cBfXL5Jc8z2FqC", "", ["postmaster@example.org"], "2025-08-25 08:53:20", 812)


@pytest.fixture
def system(mta_factory, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")            # arrival times in the template are UTC
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def run(mta, program: str, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    return mta.run(program, *args, user=user)


@pytest.mark.parametrize("command", [("mailq",), ("sendmail", "-bp"), ("postqueue", "-p"),
                                     ("sendmail", "-bp", "-C", "{config}")])
def test_listing_matches_template(system, command):
    plant_example(system)
    args = [a.replace("{config}", str(system.config_dir)) for a in command[1:]]
    result = run(system, command[0], *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == expected_lines()
    assert result.stdout.endswith("Requests.\n")


def test_empty_queue(system):
    result = run(system, "mailq")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Mail queue is empty\n", "")


def test_one_request_and_maildrop_entries(system):
    system.stop()                                # keep the submission in maildrop/
    sub = subprocess.run([str(BIN / "sendmail"), "-f", "<>", "one@example.net"], input=b"x" * 1500,
                         capture_output=True, env=system.env(), timeout=60)
    assert sub.returncode == 0, sub.stderr
    system.start()
    result = run(system, "mailq")                # pickup may or may not have taken it yet
    lines = result.stdout.splitlines()
    assert lines[-1] == "-- 1 Kbytes in 1 Request."
    assert lines[1].endswith(" MAILER-DAEMON") and lines[2].strip() == "one@example.net"


def test_system_down_reads_the_queue_directly(system):
    plant_example(system)
    system.stop()
    result = run(system, "mailq")
    assert result.returncode == 0
    assert result.stderr == "mailq: warning: Mail system is down -- accessing queue directly\n"
    assert result.stdout.splitlines() == expected_lines()
    result = run(system, "postqueue", "-p")
    assert result.stderr == "postqueue: warning: Mail system is down -- accessing queue directly\n"


# -- ordinary users ---------------------------------------------------------------------

TEST_USER = "ppqtest"


@pytest.fixture(scope="module")
def ordinary_user():
    if not IS_ROOT:
        pytest.skip("needs root to create a user")
    created = False
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
        created = True
    yield TEST_USER
    if created:
        subprocess.run(["userdel", TEST_USER], check=False)


def postqueue_as(user: str, config_dir, mode: str, program: str = "mailq") -> tuple[int, str, str]:
    """postqueue's code in a forked child running with ``user``'s ids: (status, stdout, stderr).

    A fork rather than exec'ing .venv/bin/mailq: the test's interpreter may
    live where other users cannot reach it (e.g. under /root); the socket
    showq sees is the child's either way, with the child's uid.
    """
    entry = pwd.getpwnam(user)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                os.setgroups([])
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)     # not pytest's capture objects
                sys.stderr = open(2, "w", closefd=False)
                time.tzset()
                from postpy.cli import postqueue

                status = postqueue.run(str(config_dir), mode, program=program)
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException as exc:
                os.write(err.fileno(), f"child failed: {type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(wait_status), out.read().decode(), err.read().decode()


def test_user_lists_through_showq_but_cannot_read_queue_files(system, ordinary_user):
    plant_example(system)
    status, stdout, stderr = postqueue_as(ordinary_user, system.config_dir, "p")
    assert status == 0, stderr
    assert stdout.splitlines() == expected_lines() and stderr == ""
    status, stdout, stderr = postqueue_as(ordinary_user, system.config_dir, "j")
    assert status == 0 and len(stdout.splitlines()) == 3
    cat = subprocess.run(["cat", str(system.queue_dir / "deferred" / "4cBfXL5Jc8z2FqB")],
                         user=ordinary_user, capture_output=True, timeout=30)
    assert cat.returncode != 0 and b"Permission denied" in cat.stderr


def test_user_not_in_authorized_mailq_users(mta_factory, ordinary_user):
    mta = mta_factory(master_cf=MASTER_CF, authorized_mailq_users="root")
    status, stdout, stderr = postqueue_as(ordinary_user, mta.config_dir, "p")
    uid = pwd.getpwnam(ordinary_user).pw_uid
    assert (status, stdout) == (77, "")
    assert stderr == f"mailq: fatal: User {ordinary_user}({uid}) is not allowed to view the mail queue\n"
    mta.wait_log(rf"postpy/showq\[\d+\]: warning: uid={uid}: user {ordinary_user} is not allowed")
    assert run(mta, "mailq").returncode == 0             # root may


def test_user_cannot_read_the_queue_when_the_system_is_down(system, ordinary_user):
    plant_example(system)
    system.stop()
    status, stdout, stderr = postqueue_as(ordinary_user, system.config_dir, "p", "postqueue")
    assert (status, stdout) == (69, "")
    assert stderr.startswith("postqueue: warning: Mail system is down -- accessing queue directly\n"
                             "postqueue: fatal: Mail system is down, and only root and the "
                             "mail_owner can read the queue directly")
