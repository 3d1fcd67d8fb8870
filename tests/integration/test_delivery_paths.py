"""Delivery paths end to end, with real master, qmgr, local, bounce and commands.

What reviewers found untested: a failed local delivery turned into a DSN in
the sender's own mailbox; a delivery agent killed in the middle of a
delivery; mail submitted while the system is down and delivered after
start; ``postqueue -i`` / ``-s`` retrying exactly the mail they name; the
hold queue never being scheduled; a ``.forward`` owned by someone else;
qmgr's per-recipient concurrency limit for local.

Recipients with mailboxes are real Unix users when the tests run as root
(created with useradd, removed afterwards) and the current user otherwise
(embedded mode).  Commands from aliases run as ``default_privs`` (nobody)
as root, so everything they write lives in a world-writable scratch
directory.
"""

from __future__ import annotations

import email
import os
import pwd
import re
import signal
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from conftest import IS_ROOT, MAIL_OWNER, MTA, wait_for

from postpy.ipc.trigger import SCAN, send_trigger
from postpy.queue import qfile, qid

root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root to create Unix users")

DOMAIN = "test.example"
DOMAINS = "$myhostname, localhost, test.example, a.example, b.example"


# -- helpers -----------------------------------------------------------------------------

@dataclass
class Box:
    """A local user's mailbox: an mbox file in the spool or a Maildir in the home."""

    name: str
    path: Path
    maildir: bool

    def raw(self) -> list[bytes]:
        if self.maildir:
            new = self.path / "new"
            return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        return [chunk.split(b"\n", 1)[1] for chunk in re.split(rb"\n(?=From )", data) if chunk]

    def messages(self) -> list[Message]:
        return [email.message_from_bytes(data) for data in self.raw()]


def subparts(message: Message) -> list[Message]:
    """The parts of a multipart, the blocks of a delivery-status, the message of an rfc822."""
    payload = message.get_payload()
    assert isinstance(payload, list), type(payload)
    parts = [part for part in payload if isinstance(part, Message)]
    assert len(parts) == len(payload), payload
    return parts


def local_user(area: Path, unix_users: Callable[[], pwd.struct_passwd], maildir: bool = False) -> Box:
    """A user whose mailbox local can write: created (root) or oneself (embedded)."""
    entry = unix_users() if IS_ROOT else pwd.getpwuid(os.getuid())
    if maildir:
        return Box(entry.pw_name, Path(entry.pw_dir) / "Maildir", True)
    return Box(entry.pw_name, area / "mail" / entry.pw_name, False)


def local_system(mta_factory: Callable[..., MTA], area: Path, aliases: str = "",
                 master_cf: str | None = None, **params: str) -> MTA:
    """A system with the full default master.cf, the spool in ``area`` and these aliases."""
    settings = {"mail_spool_directory": str(area / "mail"), "mydestination": DOMAINS}
    settings.update(params)
    mta = mta_factory(master_cf=master_cf, start=False, **settings)
    mta.write_aliases("postmaster: root\n" + aliases)
    return mta.start()


def inject(mta: MTA, recipients: list[str], sender: str = "s@remote.example",
           body: bytes = b"Subject: delivery paths\n\nhello\n") -> str:
    """A queue file in incoming/, as cleanup writes it; qmgr is woken."""
    queue_id = qid.new_queue_id()
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in recipients], arrival=time.time())
    path = qfile.write_queue_file(str(mta.queue_dir / "incoming"), queue_id, env, body)
    if IS_ROOT:
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), SCAN)
    return queue_id


def script(directory: Path, name: str, text: str) -> Path:
    """A shell script for an alias command, readable by default_privs."""
    path = directory / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def stays(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert ``predicate()`` holds during the whole of a bounded window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)


def attempts(mta: MTA, queue_id: str) -> int:
    return mta.log().count(f"{queue_id}: from=<")


# -- 1. a failed local delivery comes back as a DSN in the sender's mailbox -------------

def test_unknown_user_refused_and_failed_command_returned_to_sender(
        mta_factory, area: Path, unix_users) -> None:
    box = local_user(area, unix_users, maildir=IS_ROOT)
    params = {"home_mailbox": "Maildir/"} if box.maildir else {}
    mta = local_system(mta_factory, area, 'robot: "|echo no such person here; exit 67"\n', **params)
    me = f"{box.name}@{DOMAIN}"
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        assert client.sendmail(me, [me], "Subject: to myself\r\n\r\nself note\r\n") == {}
        client.mail(me)
        code, reply = client.rcpt(f"nosuchuser@{DOMAIN}")
        assert (code, reply[:5]) == (550, b"5.1.1"), reply
        client.rset()
        assert client.sendmail(me, [f"robot@{DOMAIN}"],
                               "Subject: for the robot\r\n\r\nbeep boop\r\n") == {}
    failed = mta.wait_log(rf"(\S+): to=<robot@{DOMAIN}>, relay=local, .*dsn=5\.1\.1, "
                          r"status=bounced \(user unknown\. Command output: no such person here\)", 30)
    mta.wait_log(rf"{failed.group(1)}: sender non-delivery notification: \S+", 20)
    wait_for(lambda: len(box.raw()) == 2, 30, "the note and the notice in the sender's mailbox")
    by_type = {m.get_content_type(): m for m in box.messages()}
    assert set(by_type) == {"text/plain", "multipart/report"}, list(by_type)
    assert by_type["text/plain"]["Subject"] == "to myself"
    notice = by_type["multipart/report"]
    assert notice.get_param("report-type") == "delivery-status"
    assert notice["Return-Path"] == "<>"
    assert notice["To"] is not None and me in notice["To"]
    parts = subparts(notice)
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                     "message/rfc822"]
    blocks = subparts(parts[1])
    assert len(blocks) == 2                                  # per-message, one recipient
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == f"rfc822; robot@{DOMAIN}"
    assert rcpt["Action"] == "failed"
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", rcpt["Status"]), rcpt["Status"]
    diagnostic = " ".join(rcpt["Diagnostic-Code"].split())
    assert diagnostic.startswith("x-unix;") and "no such person here" in diagnostic, diagnostic
    (returned,) = subparts(parts[2])
    assert returned["Subject"] == "for the robot"
    assert not re.search(rf"to=<nosuchuser@{DOMAIN}>, relay=", mta.log())   # never queued


# -- 2. SIGKILL of the local agent in the middle of a slow command --------------------

SLOW_COMMAND = """\
echo $PPID > {d}/tmp.$$ && mv {d}/tmp.$$ {d}/ppid.$$
i=0
while [ ! -e {d}/gate ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done
cat > {d}/out.$$
"""


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def master_child(pid: int, children: dict[int, str]) -> int:
    """The child of master that ``pid`` descends from (the shell may be a grandchild)."""
    seen = pid
    for _ in range(5):
        if seen in children:
            return seen
        seen = parent_of(seen)
    raise AssertionError(f"process {pid} does not descend from master: {children}")


def test_local_killed_during_slow_command(mta_factory, area: Path, unix_users, shared_dir: Path) -> None:
    box = local_user(area, unix_users)
    slow = script(shared_dir, "slow.sh", SLOW_COMMAND.format(d=shared_dir))
    mta = local_system(mta_factory, area, f'slow: "|/bin/sh {slow}"\n', minimal_backoff_time="1s",
                       maximal_backoff_time="1s", queue_run_delay="1s")
    queue_id = inject(mta, [f"{box.name}@{DOMAIN}", f"slow@{DOMAIN}"],
                      body=b"Subject: two recipients\n\nslow and fast\n")

    def runs(kind: str) -> list[Path]:
        return sorted(shared_dir.glob(f"{kind}.*"))

    started = wait_for(lambda: runs("ppid"), 20, "the slow command to start")
    assert isinstance(started, list)
    children = mta.children()
    agent = master_child(int(started[0].read_text()), children)
    assert "local" in children[agent], (agent, children)
    mta.wait_log(rf"{queue_id}: to=<{box.name}@{DOMAIN}>, relay=local, .*status=sent "
                 r"\(delivered to mailbox\)", 20)
    os.kill(agent, signal.SIGKILL)
    mta.wait_log(rf"{queue_id}: delivery temporarily suspended: local agent", 20)
    (shared_dir / "gate").touch()
    mta.wait_log(rf"{queue_id}: to=<slow@{DOMAIN}>, relay=local, .*status=sent "
                 rf"\(delivered to command: /bin/sh {re.escape(str(slow))}\)", 20)
    mta.wait_log(rf"{queue_id}: removed", 20)
    # Every run that started finishes (the gate is open): then count copies.
    wait_for(lambda: len(runs("out")) == len(runs("ppid")), 20, "every command run to finish")
    copies = runs("out")
    assert 1 <= len(copies) <= 2, copies
    for copy in copies:
        assert copy.read_bytes().endswith(b"slow and fast\n")
    assert len(box.raw()) == 1
    assert box.messages()[0]["Subject"] == "two recipients"


# -- 3. submitted while stopped, delivered after start ------------------------------

def test_sendmail_while_stopped_is_delivered_after_start(mta_factory, area: Path, unix_users) -> None:
    box = local_user(area, unix_users)
    mta = local_system(mta_factory, area)
    mta.stop()
    sent = mta.run("sendmail", "-f", "alice@example.org", f"{box.name}@{DOMAIN}",
                   input="Subject: while down\n\nqueued while the system was stopped\n")
    assert sent.returncode == 0, sent.stderr
    assert len(mta.queue_ids("maildrop")) == 1
    assert box.raw() == []
    mta.start()
    wait_for(lambda: box.raw(), 30, "delivery to the mailbox after start")
    (message,) = box.messages()
    assert message["Subject"] == "while down"
    assert message["Return-Path"] == "<alice@example.org>"
    assert b"\n\nqueued while the system was stopped\n" in box.raw()[0]
    mta.wait_log(rf"to=<{box.name}@{DOMAIN}>, relay=local, .*status=sent \(delivered to mailbox\)")
    wait_for(lambda: mta.queue_ids("maildrop") == [] and mta.queue_ids("incoming") == []
             and mta.queue_ids("active") == [], 10, "the queue to empty")


# -- 4. and 5. flushing one message, one site; the hold queue ---------------------------

DEFER_ONCE = """\
if [ -e {d}/tried.$DOMAIN ]; then
    cat > {d}/out.$DOMAIN
else
    touch {d}/tried.$DOMAIN
    echo not yet
    exit 75
fi
"""


def two_deferred(mta_factory, area: Path, shared_dir: Path) -> tuple[MTA, str, str]:
    """robot@a.example and robot@b.example, each deferred once, next retry in 300 s."""
    command = script(shared_dir, "defer-once.sh", DEFER_ONCE.format(d=shared_dir))
    mta = local_system(mta_factory, area, f'robot: "|/bin/sh {command}"\n',
                       minimal_backoff_time="300s", queue_run_delay="300s")
    ids = inject(mta, ["robot@a.example"]), inject(mta, ["robot@b.example"])
    for queue_id, domain in zip(ids, ("a.example", "b.example"), strict=True):
        mta.wait_log(rf"{queue_id}: to=<robot@{domain}>, relay=local, .*status=deferred "
                     r"\(temporary failure\. Command output: not yet\)", 20)
        wait_for(lambda queue_id=queue_id: queue_id in mta.queue_ids("deferred"), 20,
                 f"{queue_id} in deferred/")
    assert not list(shared_dir.glob("out.*"))
    return mta, ids[0], ids[1]


def sent_line(queue_id: str, domain: str) -> str:
    return rf"{queue_id}: to=<robot@{domain}>, relay=local, .*status=sent \(delivered to command"


@pytest.mark.parametrize("how", ["-i", "-s"])
def test_postqueue_flushes_only_what_it_names(mta_factory, area: Path, shared_dir: Path,
                                              how: str) -> None:
    mta, first, second = two_deferred(mta_factory, area, shared_dir)
    stays(lambda: attempts(mta, first) == 1 and attempts(mta, second) == 1, 1.0,
          "no retry before the flush (backoff is 300 s)")
    before = len(mta.log())
    result = mta.run("postqueue", how, first if how == "-i" else "a.example")
    assert (result.returncode, result.stderr) == (0, "")
    mta.wait_log(sent_line(first, "a.example"), 20)
    mta.wait_log(rf"{first}: removed", 20)
    assert re.search(sent_line(first, "a.example"), mta.log()[before:])
    assert (shared_dir / "out.a.example").read_bytes().endswith(b"hello\n")
    # The other deferred message was not retried.
    stays(lambda: attempts(mta, second) == 1 and second in mta.queue_ids("deferred"), 1.0,
          "the message not named stays deferred, unattempted")
    assert not (shared_dir / "out.b.example").exists()


def test_hold_is_never_scheduled(mta_factory, area: Path, shared_dir: Path) -> None:
    mta, held, other = two_deferred(mta_factory, area, shared_dir)
    result = mta.run("postsuper", "-h", held)
    assert result.returncode == 0 and "Placed on hold: 1 message" in result.stderr, result.stderr
    assert mta.queue_ids("hold") == [held]
    assert mta.run("postqueue", "-f").returncode == 0
    mta.wait_log(rf"{other}: removed", 20)                     # the flush was carried out
    stays(lambda: mta.queue_ids("hold") == [held] and attempts(mta, held) == 1, 2.0,
          "a held message stays in hold/, unattempted")
    assert not re.search(sent_line(held, "a.example"), mta.log())
    assert not (shared_dir / "out.a.example").exists()
    result = mta.run("postsuper", "-H", held)
    assert result.returncode == 0 and "Released from hold: 1 message" in result.stderr, result.stderr
    mta.wait_log(sent_line(held, "a.example"), 20)
    mta.wait_log(rf"{held}: removed", 20)
    assert mta.queue_ids("hold") == []


# -- 6. a .forward owned by someone else ---------------------------------------------

@root_only
def test_forward_owned_by_another_user_is_ignored(mta_factory, area: Path, unix_users) -> None:
    box = local_user(area, unix_users)
    intruder = unix_users()
    forward = Path(pwd.getpwnam(box.name).pw_dir) / ".forward"
    stolen = area / "shared" / "stolen"
    forward.write_text(f"{intruder.pw_name}@{DOMAIN}\n{stolen}\n")
    os.chown(forward, intruder.pw_uid, intruder.pw_gid)
    os.chmod(forward, 0o644)
    mta = local_system(mta_factory, area)
    queue_id = inject(mta, [f"{box.name}@{DOMAIN}"], body=b"Subject: mine\n\nfor me only\n")
    mta.wait_log(rf"{queue_id}: to=<{box.name}@{DOMAIN}>, relay=local, .*status=sent "
                 r"\(delivered to mailbox\)", 20)
    mta.wait_log(rf"{queue_id}: removed", 20)
    assert (f"warning: {forward}: owned by uid {intruder.pw_uid}, not by {box.name} or root: ignored"
            in mta.log())
    assert [m["Subject"] for m in box.messages()] == ["mine"]
    assert not stolen.exists()
    assert not (area / "mail" / intruder.pw_name).exists()
    assert "forwarded as" not in mta.log()


# -- 7. qmgr's per-destination concurrency for local ---------------------------------

RECORD_RUN = """\
cat > /dev/null
s=$(date +%s.%N)
sleep 0.5
e=$(date +%s.%N)
echo "$s $e" >> {d}/runs
"""


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:          # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("limit", [1, 2])
def test_local_destination_concurrency_limit(mta_factory, area: Path, shared_dir: Path,
                                             limit: int) -> None:
    command = script(shared_dir, "record.sh", RECORD_RUN.format(d=shared_dir))
    mta = local_system(mta_factory, area, f'robot: "|/bin/sh {command}"\n',
                       local_destination_concurrency_limit=str(limit))
    ids = [inject(mta, [f"robot@{DOMAIN}"]) for _ in range(4)]
    for queue_id in ids:
        mta.wait_log(rf"{queue_id}: removed", 30)
    runs = [tuple(float(x) for x in line.split()) for line in
            (shared_dir / "runs").read_text().splitlines()]
    assert len(runs) == 4
    intervals = [(s, e) for s, e in runs]
    assert most_at_once(intervals) == limit, sorted(intervals)
