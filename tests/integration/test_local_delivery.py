"""local(8) in a real system: master, cleanup, qmgr, local, bounce.

Mail is placed in incoming/ as cleanup would (or submitted with sendmail),
qmgr hands it to the real local delivery agent, and the tests look at the
mailboxes, files and log lines.  Tests marked ``root`` create real Unix
users (useradd) and remove them afterwards; they are skipped otherwise.
The rest also run as an ordinary user (embedded mode: every delivery runs
as that user).
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import time
from pathlib import Path

import pytest
from conftest import IS_ROOT, MAIL_OWNER, as_user, wait_for

from postpy.ipc.trigger import SCAN, send_trigger
from postpy.queue import qfile, qid

root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root to create Unix users")

DOMAIN = "test.example"
BODY = b"Subject: local test\n\nFrom the body\nline two\n"


def start(mta_factory, area: Path, aliases: str = "", **params: str):
    settings = {"mail_spool_directory": str(area / "mail"), "recipient_delimiter": "+",
                "transport_maps": "inline:{fwd.example=local:}", "default_privs": "nobody"}
    settings.update(params)
    mta = mta_factory(start=False, **settings)
    (mta.config_dir / "aliases").write_text("postmaster: root\n" + aliases)
    built = mta.run("postalias", str(mta.config_dir / "aliases"))
    assert built.returncode == 0, built.stderr
    return mta.start()


def inject(mta, recipients: list[str], sender: str = "", body: bytes = BODY) -> str:
    """A queue file in incoming/, as cleanup writes it; qmgr is woken."""
    queue_id = qid.new_queue_id()
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in recipients], arrival=time.time())
    path = qfile.write_queue_file(str(mta.queue_dir / "incoming"), queue_id, env, body)
    if IS_ROOT:
        owner = pwd.getpwnam(MAIL_OWNER)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    send_trigger(str(mta.queue_dir / "public" / "qmgr"), SCAN)
    return queue_id


def delivered(mta, queue_id: str, to: str, status: str, text: str, timeout: float = 20) -> str:
    line = mta.wait_log(rf"{queue_id}: to=<{re.escape(to)}>.*relay=local, .*"
                        rf"status={status} \({text}.*", timeout)
    return line.group(0)


# -- mailboxes (real users) ------------------------------------------------------------

@root_only
def test_maildir_owned_by_user_via_sendmail(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    mta = start(mta_factory, area, home_mailbox="Maildir/")
    sent = mta.run("sendmail", "-f", f"{user.pw_name}@{DOMAIN}", f"{user.pw_name}@{DOMAIN}",
                   input="Subject: via sendmail\n\nhello\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(rf"to=<{user.pw_name}@{DOMAIN}>, relay=local, .*status=sent \(delivered to maildir\)",
                 30)
    maildir = Path(user.pw_dir) / "Maildir"
    for sub in ("", "new", "cur", "tmp"):
        st = os.stat(maildir / sub)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o700)
    (name,) = os.listdir(maildir / "new")
    st = os.stat(maildir / "new" / name)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o600)
    text = (maildir / "new" / name).read_text()
    assert text.startswith(f"Return-Path: <{user.pw_name}@{DOMAIN}>\n"
                           f"Delivered-To: {user.pw_name}@{DOMAIN}\n")
    assert "Subject: via sendmail" in text


@root_only
def test_mbox_in_root_owned_spool(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    mta = start(mta_factory, area)
    first = inject(mta, [f"{user.pw_name}@{DOMAIN}"], sender="a@remote.example")
    delivered(mta, first, f"{user.pw_name}@{DOMAIN}", "sent", "delivered to mailbox")
    second = inject(mta, [f"{user.pw_name}+ext@{DOMAIN}"], sender="")
    delivered(mta, second, f"{user.pw_name}+ext@{DOMAIN}", "sent", "delivered to mailbox")
    mbox = area / "mail" / user.pw_name
    st = os.stat(mbox)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o600)
    data = mbox.read_bytes()
    messages = re.split(rb"\n(?=From )", data)
    assert len(messages) == 2
    assert messages[0].startswith(b"From a@remote.example ")
    assert b"\nReturn-Path: <a@remote.example>\n" in messages[0]
    assert b"\n>From the body\nline two\n" in messages[0]
    assert messages[1].startswith(b"From MAILER-DAEMON ")
    assert f"\nDelivered-To: {user.pw_name}+ext@{DOMAIN}\n".encode() in messages[1]
    assert data.endswith(b"line two\n\n")
    assert not (area / "mail" / f"{user.pw_name}.lock").exists()


@root_only
def test_bad_forward_is_ignored_with_a_log_line(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    forward = Path(user.pw_dir) / ".forward"
    forward.write_text(f"{area}/shared/should-not-exist\n")
    os.chown(forward, user.pw_uid, user.pw_gid)
    os.chmod(forward, 0o666)
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"{user.pw_name}@{DOMAIN}"], sender="a@remote.example")
    delivered(mta, queue_id, f"{user.pw_name}@{DOMAIN}", "sent", "delivered to mailbox")
    assert f"warning: {forward}: writable by group or others: ignored" in mta.log()
    assert not (area / "shared" / "should-not-exist").exists()


@root_only
def test_forward_with_extension_and_file(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    for name, text in ((".forward+lists", "~/lists.mbox\n"), (".forward", f"\\{user.pw_name}\n")):
        path = Path(user.pw_dir) / name
        path.write_text(text)
        os.chown(path, user.pw_uid, user.pw_gid)
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"{user.pw_name}+lists@{DOMAIN}", f"{user.pw_name}@{DOMAIN}"],
                      sender="a@remote.example")
    lists = Path(user.pw_dir) / "lists.mbox"
    delivered(mta, queue_id, f"{user.pw_name}+lists@{DOMAIN}", "sent", f"delivered to file: {lists}")
    delivered(mta, queue_id, f"{user.pw_name}@{DOMAIN}", "sent", "delivered to mailbox")
    st = os.stat(lists)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o600)
    assert lists.read_bytes().startswith(b"From a@remote.example ")
    assert (area / "mail" / user.pw_name).exists()


@root_only
def test_forward_loop_through_dot_forward_bounces(mta_factory, area: Path, unix_users) -> None:
    one, two = unix_users(), unix_users()
    for user, target in ((one, f"{two.pw_name}@fwd.example"), (two, f"{one.pw_name}@{DOMAIN}")):
        path = Path(user.pw_dir) / ".forward"
        path.write_text(target + "\n")
        os.chown(path, user.pw_uid, user.pw_gid)
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"{one.pw_name}@{DOMAIN}"], sender=f"{two.pw_name}@{DOMAIN}")
    line = delivered(mta, queue_id, f"{two.pw_name}@fwd.example", "sent", "forwarded as ")
    found = re.search(r"forwarded as (\w+)", line)
    assert found is not None
    new_id = found.group(1)
    mta.wait_log(rf"{new_id}: to=<{one.pw_name}@{DOMAIN}>, orig_to=<{two.pw_name}@fwd.example>, "
                 rf"relay=local, .*dsn=5\.4\.6, status=bounced \(mail forwarding loop for "
                 rf"{one.pw_name}@{DOMAIN}\)", 30)


# -- aliases: commands, includes, files (any user) ---------------------------------------

def test_alias_pipe_environment_and_privileges(mta_factory, area: Path) -> None:
    out = area / "shared" / "robot"
    mta = start(mta_factory, area, f'robot: "|id -u > {out}.uid; env > {out}.env; cat > {out}.msg"\n')
    queue_id = inject(mta, [f"robot+tag@{DOMAIN}"], sender="s@remote.example")
    delivered(mta, queue_id, f"robot+tag@{DOMAIN}", "sent", "delivered to command: id -u")
    expected_uid = pwd.getpwnam("nobody").pw_uid if IS_ROOT else os.getuid()
    assert int(Path(f"{out}.uid").read_text()) == expected_uid
    env = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines()
               if "=" in line)
    for added_by_shell in ("PWD", "SHLVL", "_"):
        env.pop(added_by_shell, None)
    assert set(env) == {"HOME", "USER", "LOGNAME", "SHELL", "SENDER", "RECIPIENT", "LOCAL",
                        "EXTENSION", "DOMAIN", "ORIGINAL_RECIPIENT", "PATH"}
    assert (env["SENDER"], env["RECIPIENT"], env["LOCAL"], env["EXTENSION"], env["DOMAIN"]) == (
        "s@remote.example", f"robot+tag@{DOMAIN}", "robot+tag", "tag", DOMAIN)
    assert env["PATH"] == "/usr/bin:/bin"
    msg = Path(f"{out}.msg").read_text()
    assert f"\nDelivered-To: robot+tag@{DOMAIN}\n" in msg


@pytest.mark.parametrize("command, status, dsn, text", [
    ("echo mailbox busy; exit 75", "deferred", "4.3.0", "temporary failure. Command output: mailbox busy"),
    ("echo no such person; exit 67", "bounced", "5.1.1", "user unknown. Command output: no such person"),
])
def test_pipe_exit_status(mta_factory, area: Path, command: str, status: str, dsn: str,
                          text: str) -> None:
    mta = start(mta_factory, area, f'robot: "|{command}"\n')
    queue_id = inject(mta, [f"robot@{DOMAIN}"], sender=f"robot2@{DOMAIN}")
    line = delivered(mta, queue_id, f"robot@{DOMAIN}", status, re.escape(text))
    assert f"dsn={dsn}" in line
    if status == "deferred":
        wait_for(lambda: queue_id in mta.queue_ids("deferred"), 20, "the message to be deferred")


def test_unknown_user_bounces(mta_factory, area: Path) -> None:
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"nosuchuser@{DOMAIN}"], sender="")
    line = delivered(mta, queue_id, f"nosuchuser@{DOMAIN}", "bounced", 'unknown user: "nosuchuser"')
    assert "dsn=5.1.1" in line


def test_include_and_files(mta_factory, area: Path) -> None:
    shared = area / "shared"
    (shared / "members").write_text(f"{shared}/archive\n")
    (shared / "restricted").write_text('"|touch /tmp/never"\n')
    target = shared / "target"
    target.write_text("")
    (shared / "link").symlink_to(target)
    aliases = (f"list: :include:{shared}/members\n"
               f"cmdlist: :include:{shared}/restricted\n"
               f"direct: {shared}/direct\n"
               f"sneaky: {shared}/link\n")
    mta = start(mta_factory, area, aliases, allow_mail_to_files="alias, forward, include")
    queue_id = inject(mta, [f"{n}@{DOMAIN}" for n in ("list", "cmdlist", "direct", "sneaky")],
                      sender="s@remote.example")
    delivered(mta, queue_id, f"list@{DOMAIN}", "sent", f"delivered to file: {shared}/archive")
    delivered(mta, queue_id, f"direct@{DOMAIN}", "sent", f"delivered to file: {shared}/direct")
    delivered(mta, queue_id, f"cmdlist@{DOMAIN}", "bounced", "mail to command is restricted")
    delivered(mta, queue_id, f"sneaky@{DOMAIN}", "bounced",
              f"cannot append message to file {shared}/link: .*symbolic link")
    expected_uid = pwd.getpwnam("nobody").pw_uid if IS_ROOT else os.getuid()
    for name in ("archive", "direct"):
        st = os.stat(shared / name)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (expected_uid, 0o600)
        assert (shared / name).read_bytes().startswith(b"From s@remote.example ")
    assert target.read_text() == ""


def test_alias_forwarding_loop_bounces(mta_factory, area: Path) -> None:
    mta = start(mta_factory, area, f"loop1: loop2@fwd.example\nloop2: loop1@{DOMAIN}\n")
    queue_id = inject(mta, [f"loop1@{DOMAIN}"], sender="")
    line = delivered(mta, queue_id, "loop2@fwd.example", "sent", "forwarded as ")
    found = re.search(r"forwarded as (\w+)", line)
    assert found is not None
    new_id = found.group(1)
    mta.wait_log(rf"{new_id}: to=<loop1@{DOMAIN}>, .*status=bounced \(mail forwarding loop "
                 rf"for loop1@{DOMAIN}\)", 30)


def test_pipe_tempfail_is_shown_retried_then_delivered(mta_factory, area: Path) -> None:
    """A 4xx from a command defers: mailq shows why; a flush retries and delivers."""
    marker = area / "shared" / "second-try"
    out = area / "shared" / "delivered"
    command = f"if [ -e {marker} ]; then cat > {out}; else touch {marker}; echo not yet; exit 75; fi"
    mta = start(mta_factory, area, f'robot: "|{command}"\n', minimal_backoff_time="300s")
    queue_id = inject(mta, [f"robot@{DOMAIN}"], sender=f"robot2@{DOMAIN}")
    delivered(mta, queue_id, f"robot@{DOMAIN}", "deferred", "temporary failure. Command output: not yet")
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 20, "the message to be deferred")
    listing = mta.run("postqueue", "-p").stdout
    assert queue_id in listing and "(temporary failure. Command output: not yet)" in listing, listing
    assert mta.run("postqueue", "-f").returncode == 0
    delivered(mta, queue_id, f"robot@{DOMAIN}", "sent", "delivered to command")
    mta.wait_log(rf"{queue_id}: removed")
    assert out.read_bytes().endswith(BODY.split(b"\n\n", 1)[1])


def test_pipe_tempfail_past_lifetime_is_returned(mta_factory, area: Path) -> None:
    """Deferred until maximal_queue_lifetime, then returned to the sender with a DSN."""
    mta = start(mta_factory, area, 'robot: "|echo busy; exit 75"\nback: /dev/null\n',
                minimal_backoff_time="1s", maximal_backoff_time="1s", queue_run_delay="1s",
                maximal_queue_lifetime="2s")
    queue_id = inject(mta, [f"robot@{DOMAIN}"], sender=f"back@{DOMAIN}")
    mta.wait_log(rf"{queue_id}: from=<back@{DOMAIN}>, status=expired, returned to sender", 20)
    notice = mta.wait_log(rf"{queue_id}: sender non-delivery notification: (\S+)").group(1)
    delivered(mta, notice, f"back@{DOMAIN}", "sent", "delivered to file: /dev/null")
    mta.wait_log(rf"{queue_id}: removed")


# -- a local user against another's mail (real users) ------------------------------------

@root_only
def test_precreated_mbox_of_another_user_is_refused(mta_factory, area: Path, unix_users) -> None:
    """A spool others can write (1777): the attacker creates SPOOL/victim mode 0666 first."""
    victim, attacker = unix_users(), unix_users()
    spool = area / "mail"
    os.chmod(spool, 0o1777)
    trap = spool / victim.pw_name

    def prepare() -> str:
        fd = os.open(trap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.fchmod(fd, 0o666)
        os.close(fd)
        return "ok"

    assert as_user(attacker, prepare) == "ok"
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"{victim.pw_name}@{DOMAIN}"], sender="a@remote.example",
                      body=b"Subject: for the victim only\n\nthe secret\n")
    delivered(mta, queue_id, f"{victim.pw_name}@{DOMAIN}", "deferred",
              re.escape(f"cannot update mailbox {trap} for user {victim.pw_name}. cannot open "
                        f"{trap}: file is owned by uid {attacker.pw_uid}, not by {victim.pw_name}"))
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 20, "the message to be deferred")
    assert as_user(attacker, trap.read_text) == ""          # the attacker got nothing
    assert os.stat(trap).st_uid == attacker.pw_uid


@root_only
def test_writable_include_file_is_refused(mta_factory, area: Path, unix_users) -> None:
    """A root-owned include file mode 0666: an attacker adds an address and a command."""
    member, attacker = unix_users(), unix_users()
    shared = area / "shared"
    members = shared / "members"
    members.write_text(f"{member.pw_name}\n")
    os.chmod(members, 0o666)
    pwned = shared / "pwned"

    def add_myself() -> str:
        with open(members, "a") as f:
            f.write(f'{attacker.pw_name}\n"|touch {pwned}"\n')
        return "ok"

    assert as_user(attacker, add_myself) == "ok"
    mta = start(mta_factory, area, f"list: :include:{members}\n",
                allow_mail_to_commands="alias, forward, include")
    queue_id = inject(mta, [f"list@{DOMAIN}"], sender="a@remote.example")
    delivered(mta, queue_id, f"list@{DOMAIN}", "deferred",
              re.escape(f"mail system configuration error: include file {members} is writable "
                        "by group or others"))
    assert f"warning: include file {members}: writable by group or others: refused" in mta.log()
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 20, "the message to be deferred")
    assert not (area / "mail" / attacker.pw_name).exists()
    assert not (area / "mail" / member.pw_name).exists()
    assert not pwned.exists()
    os.chmod(members, 0o644)                    # the administrator repairs it: now delivered
    members.write_text(f"{member.pw_name}\n")
    assert mta.run("postqueue", "-f").returncode == 0
    mta.wait_log(rf"{queue_id}: to=<{member.pw_name}@mx\.test\.example>, orig_to=<list@{DOMAIN}>, "
                 r"relay=local, .*status=sent \(delivered to mailbox\)", 30)
    assert (area / "mail" / member.pw_name).exists()
    assert not (area / "mail" / attacker.pw_name).exists()


# -- mail to root ------------------------------------------------------------------------

@root_only
def test_mail_to_root_via_sendmail_t_in_an_mbox_spool(mta_factory, area: Path) -> None:
    """Cron's way: sendmail -t with To: root.  root's mailbox is written as root; what an
    alias runs for root still runs as default_privs."""
    uid_file = area / "shared" / "cron.uid"
    mta = start(mta_factory, area, f'cron: root, "|id -u > {uid_file}"\n')
    probe = mta.run("sendmail", "-bv", "root")
    assert probe.returncode == 0 and "root... deliverable via local" in probe.stdout, probe
    sent = mta.run("sendmail", "-t", input="To: root\nSubject: cron output\n\nhi\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(r"to=<root@mx\.test\.example>, orig_to=<root>, relay=local, .*status=sent "
                 r"\(delivered to mailbox\)", 30)
    mbox = area / "mail" / "root"
    st = os.stat(mbox)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert b"Subject: cron output\n" in mbox.read_bytes()
    sent = mta.run("sendmail", f"cron@{DOMAIN}", input="Subject: second\n\nhi\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(rf"to=<cron@{DOMAIN}>, relay=local, .*status=sent \(delivered to command", 30)
    mta.wait_log(rf"to=<root@mx\.test\.example>, orig_to=<cron@{DOMAIN}>, relay=local, "
                 r".*status=sent \(delivered to mailbox\)", 30)
    assert int(uid_file.read_text()) == pwd.getpwnam("nobody").pw_uid
    wait_for(lambda: mbox.read_bytes().count(b"\nSubject: ") == 2, 30, "the second message")
    assert os.stat(mbox).st_uid == 0


@root_only
def test_existing_root_owned_mbox_receives_mail(mta_factory, area: Path) -> None:
    """The spool as another MTA left it: SPOOL/root, root's, mode 0600."""
    mbox = area / "mail" / "root"
    mbox.write_bytes(b"From old@example Mon Jan  1 00:00:00 2024\nSubject: old\n\nold\n\n")
    os.chmod(mbox, 0o600)
    mta = start(mta_factory, area)
    queue_id = inject(mta, [f"root@{DOMAIN}"], sender="a@remote.example")
    delivered(mta, queue_id, f"root@{DOMAIN}", "sent", "delivered to mailbox")
    data = mbox.read_bytes()
    assert data.startswith(b"From old@example ") and b"\nFrom a@remote.example " in data
    assert os.stat(mbox).st_uid == 0


@root_only
def test_mail_to_root_in_a_maildir_spool(mta_factory, area: Path) -> None:
    """mail_spool_directory ending in / (Maildir per user, as in Postfix): root's is root's."""
    mta = start(mta_factory, area, mail_spool_directory=f"{area}/mail/")
    sent = mta.run("sendmail", "-t", input="To: root\nSubject: to the maildir\n\nhi\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(r"to=<root@mx\.test\.example>, orig_to=<root>, relay=local, .*status=sent "
                 r"\(delivered to maildir\)", 30)
    box = area / "mail" / "root"
    (name,) = os.listdir(box / "new")
    for path in (box, box / "tmp", box / "new", box / "cur", box / "new" / name):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (0, 0), path
    assert stat.S_IMODE(os.stat(box).st_mode) == 0o700
    assert "Subject: to the maildir" in (box / "new" / name).read_text()
