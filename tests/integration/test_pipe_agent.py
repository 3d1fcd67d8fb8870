"""pipe(8) in a real system: master, qmgr, the pipe agent, bounce, cleanup.

Each pipe service in master.cf runs a small recording script (or a command
that fails in a chosen way); transport_maps routes a test domain to each
service.  Mail is placed in incoming/ as cleanup writes it, with client
attributes, and the tests read what the command got (its arguments, its
standard input, its uid), the log lines and the queue.
"""

from __future__ import annotations

import os
import pwd
import re
import time
from pathlib import Path

import pytest
from conftest import IS_ROOT, MAIL_OWNER, ROOT, wait_for

from postpy.ipc.trigger import SCAN, send_trigger
from postpy.queue import qfile, qid

root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root: pipe switches to user=")
pytestmark = root_only

RECORD = """#!/bin/sh
# record.sh DIR ARGS...: keep the arguments, standard input and uid of one call
dir=$1; shift
out=$(mktemp "$dir/call.XXXXXXXX")
printf '%s\\n' "$@" > "$out.argv"
id -u > "$out.uid"
cat > "$out.stdin"
mv "$out" "$out.done"
"""
FAIL = """#!/bin/sh
# fail.sh STATUS TEXT...: read the message, print TEXT, exit with STATUS
status=$1; shift
cat > /dev/null
echo "$@"
exit "$status"
"""
BODY = b"Subject: pipe test\n\n.leading dot\nFrom the body\n"


def calls(directory: Path) -> list[dict[str, object]]:
    """The finished calls of record.sh in ``directory``."""
    out = []
    for done in sorted(directory.glob("call.*.done")):
        stem = str(done)[:-len(".done")]
        out.append({"argv": Path(f"{stem}.argv").read_text().splitlines(),
                    "uid": int(Path(f"{stem}.uid").read_text()),
                    "stdin": Path(f"{stem}.stdin").read_bytes()})
    return out


def inject(mta, recipients: list[str], sender: str = "sender@remote.example", body: bytes = BODY,
           orig: dict[str, str] | None = None) -> str:
    """A queue file in incoming/, as cleanup writes it; qmgr is woken."""
    queue_id = qid.new_queue_id()
    rcpts = [qfile.Recipient(r, (orig or {}).get(r, "")) for r in recipients]
    env = qfile.Envelope(sender, rcpts, arrival=time.time(),
                         attrs={"client_addr": "192.0.2.7", "helo": "client.example", "origin": "smtpd"})
    path = qfile.write_queue_file(str(mta.queue_dir / "incoming"), queue_id, env, body)
    owner = pwd.getpwnam(MAIL_OWNER)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), SCAN)
    return queue_id


def start(mta_factory, shared: Path, services: str, routes: str, **params: str):
    (shared / "record.sh").write_text(RECORD)
    (shared / "fail.sh").write_text(FAIL)
    master_cf = (ROOT / "etc" / "master.cf").read_text() + services.replace("{dir}", str(shared))
    return mta_factory(master_cf=master_cf, recipient_delimiter="+", transport_maps=f"inline:{{{routes}}}",
                       **params)


def test_flags_macros_user_and_recipient_limit(mta_factory, shared_dir: Path) -> None:
    one, many = shared_dir / "one", shared_dir / "many"
    for d in (one, many):
        d.mkdir()
        os.chmod(d, 0o1777)
    services = (
        "one unix - n n - - pipe flags=FRDO.X user=nobody argv=/bin/sh {dir}/record.sh {dir}/one"
        " ${sender} ${recipient} ${original_recipient} ${user} ${extension} ${mailbox} ${domain}"
        " ${nexthop} ${client_address} ${client_helo} ${size} ${queue_id}\n"
        "many unix - n n - - pipe flags=hu user=nobody argv=/bin/sh {dir}/record.sh {dir}/many"
        " -f ${sender} -- ${recipient} n=${nexthop}\n")
    mta = start(mta_factory, shared_dir, services, "one.example=one:, many.example=many:Hop.Example",
                one_destination_recipient_limit="1")
    nobody = pwd.getpwnam("nobody").pw_uid

    first = inject(mta, ["Alice+Box@one.example", "bob@one.example"], orig={"bob@one.example": "root@one.example"})
    wait_for(lambda: len(calls(one)) == 2, 20, "two calls of the one-recipient service")
    for rcpt in ("Alice+Box@one.example", "bob@one.example"):
        mta.wait_log(rf"{first}: to=<{re.escape(rcpt)}>.*relay=one, .*dsn=2.0.0, "
                     r"status=sent \(delivered via one service\)")
    by_rcpt = {c["argv"][1]: c for c in calls(one)}       # type: ignore[index]
    alice, bob = by_rcpt["Alice+Box@one.example"], by_rcpt["bob@one.example"]
    size = str(len(BODY))
    assert alice["argv"] == ["sender@remote.example", "Alice+Box@one.example", "Alice+Box@one.example",
                             "Alice", "Box", "Alice+Box", "one.example", "one.example", "192.0.2.7",
                             "client.example", size, first]
    assert bob["argv"][2] == "root@one.example"          # ${original_recipient}
    assert alice["uid"] == bob["uid"] == nobody          # user=, never root
    stdin = alice["stdin"]
    assert isinstance(stdin, bytes)
    lines = stdin.split(b"\n")
    assert lines[0].startswith(b"From sender@remote.example ")          # F
    assert lines[1:4] == [b"Return-Path: <sender@remote.example>",      # R
                          b"X-Original-To: Alice+Box@one.example",      # O
                          b"Delivered-To: alice+box@one.example"]       # D
    assert stdin.endswith(b"\n\n..leading dot\nFrom the body\n")         # .

    second = inject(mta, ["Carol@Many.Example", "dave@many.example"], sender="")
    wait_for(lambda: calls(many), 20, "the call of the many-recipient service")
    mta.wait_log(rf"{second}: to=<dave@many.example>.*relay=many, .*status=sent")
    [call] = calls(many)                                 # one command for both recipients
    assert call["argv"] == ["-f", "MAILER-DAEMON", "--", "carol@many.example", "dave@many.example",
                            "n=hop.example"]
    assert call["stdin"] == BODY                         # no flags: the message as queued
    wait_for(lambda: not mta.queue_ids("active") and not mta.queue_ids("incoming"), 10, "an empty queue")
    assert mta.queue_ids("deferred") == []


def test_failures_defer_or_bounce_with_output(mta_factory, shared_dir: Path) -> None:
    dsn = shared_dir / "dsn"
    dsn.mkdir()
    os.chmod(dsn, 0o1777)
    services = (
        "hang unix - n n - - pipe user=nobody argv=/bin/sleep 60\n"
        "tempfail unix - n n - - pipe user=nobody argv=/bin/sh {dir}/fail.sh 75 mailbox locked\n"
        "nouser unix - n n - - pipe user=nobody argv=/bin/sh {dir}/fail.sh 67 no such user here\n"
        "crash unix - n n - - pipe user=nobody argv=/bin/sh {dir}/fail.sh 3 it broke\n"
        "dsn unix - n n - - pipe user=nobody argv=/bin/sh {dir}/record.sh {dir}/dsn\n")
    mta = start(mta_factory, shared_dir, services,
                "hang.example=hang:, tempfail.example=tempfail:, nouser.example=nouser:, "
                "crash.example=crash:, owner.example=dsn:", hang_time_limit="2s")
    sender = "owner@owner.example"

    hung = inject(mta, ["a@hang.example"], sender=sender)
    started = time.monotonic()
    mta.wait_log(rf"{hung}: to=<a@hang.example>, relay=hang, .*dsn=4.3.0, status=deferred "
                 r'\(Command time limit exceeded: "/bin/sleep"\)', 30)
    assert time.monotonic() - started < 25
    mta.wait_log(rf"warning: {hung}: service hang: command /bin/sleep killed after the time limit of 2s")

    temp = inject(mta, ["b@tempfail.example"], sender=sender)
    mta.wait_log(rf"{temp}: to=<b@tempfail.example>, relay=tempfail, .*dsn=4.3.0, status=deferred "
                 r"\(temporary failure. Command output: mailbox locked\)", 20)

    gone = inject(mta, ["c@nouser.example"], sender=sender)
    mta.wait_log(rf"{gone}: to=<c@nouser.example>, relay=nouser, .*dsn=5.1.1, status=bounced "
                 r"\(user unknown. Command output: no such user here\)", 20)
    broke = inject(mta, ["d@crash.example"], sender=sender)
    mta.wait_log(rf'{broke}: to=<d@crash.example>, relay=crash, .*dsn=5.3.0, status=bounced '
                 r'\(Command died with status 3: "/bin/sh". Command output: it broke\)', 20)

    # Deferred mail stays queued (nothing lost); bounced mail is returned to
    # the sender with the command's output in the DSN.
    wait_for(lambda: {hung, temp} <= set(mta.queue_ids("deferred")), 20, "deferred mail in deferred/")
    wait_for(lambda: len(calls(dsn)) == 2, 30, "two bounce notices")
    notices = b"\n".join(c["stdin"] for c in calls(dsn))   # type: ignore[misc]
    assert b"no such user here" in notices and b"it broke" in notices
    assert b"Status: 5.1.1" in notices


def test_configuration_errors_defer_and_never_run(mta_factory, shared_dir: Path) -> None:
    marker = shared_dir / "ran"
    services = (
        f"asroot unix - n n - - pipe user=root argv=/usr/bin/touch {marker}.root\n"
        f"badflags unix - n n - - pipe flags=RZ user=nobody argv=/usr/bin/touch {marker}.flags\n"
        "badargv unix - n n - - pipe user=nobody argv=/bin/echo ${nosuch}\n"
        "noargv unix - n n - - pipe user=nobody\n"
        "manyd unix - n n - - pipe flags=D user=nobody argv=/usr/bin/touch {dir}/ran.d\n")
    mta = start(mta_factory, shared_dir, services,
                "root.example=asroot:, flags.example=badflags:, argv.example=badargv:, "
                "noargv.example=noargv:, manyd.example=manyd:")
    cases = [
        ("root.example", "asroot", r"user=root: refusing to run commands with root privileges"),
        ("flags.example", "badflags", r'flags=RZ: unknown flag "Z" \(valid: [^)]*\)'),
        ("argv.example", "badargv", r'argv word "\$\{nosuch\}": unknown macro \$\{nosuch\}'),
        ("noargv.example", "noargv", r"missing argv= command attribute"),
    ]
    ids = {}
    for domain, _service, _error in cases:
        ids[domain] = inject(mta, [f"x@{domain}"])
    many = inject(mta, ["y@manyd.example", "z@manyd.example"])
    for domain, service, error in cases:
        mta.wait_log(rf"error: service {service}: {error}; mail for this service is deferred", 20)
        mta.wait_log(rf"{ids[domain]}: to=<x@{re.escape(domain)}>, relay={service}, .*dsn=4.3.5, "
                     r"status=deferred \(mail system configuration error\)", 20)
    mta.wait_log(rf"warning: {many}: pipe flag `D' requires manyd_destination_recipient_limit = 1", 20)
    mta.wait_log(rf"{many}: to=<z@manyd.example>, relay=manyd, .*status=deferred", 20)
    wait_for(lambda: set(ids.values()) | {many} <= set(mta.queue_ids("deferred")), 20, "all deferred")
    assert list(shared_dir.glob("ran*")) == []           # nothing was run, least of all as root
