"""procmail as a delivery agent: through a pipe(8) transport, and as
local(8)'s ``mailbox_command``.

The recipients are real Unix users (created for the test, homes in a
temporary tree); their ``~/.procmailrc`` files a message whose subject says
"urgent" into a Maildir folder and everything else into ``~/Maildir/``,
so the result shows procmail read the message and its rc file.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
from pathlib import Path

import pytest
from conftest import IS_ROOT, ROOT, wait_for

PROCMAIL = shutil.which("procmail")
pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="needs root to create Unix users"),
    pytest.mark.skipif(PROCMAIL is None, reason="procmail not installed (Debian: procmail)"),
]

PROCMAILRC = """MAILDIR=$HOME/Maildir/
DEFAULT=$MAILDIR
LOGFILE=$HOME/procmail.log
:0
* ^Subject:.*urgent
.urgent/
"""


def prepare_user(user) -> Path:
    home = Path(user.pw_dir)
    rc = home / ".procmailrc"
    rc.write_text(PROCMAILRC)
    os.chown(rc, user.pw_uid, user.pw_gid)
    os.chmod(rc, 0o644)
    os.mkdir(home / "Maildir")                   # procmail changes into MAILDIR; it must exist
    os.chown(home / "Maildir", user.pw_uid, user.pw_gid)
    return home


def maildir_files(folder: Path) -> list[Path]:
    new = folder / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def send(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("sender@remote.example", [rcpt],
                      f"From: sender@remote.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n")


def test_procmail_pipe_transport(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    home = prepare_user(user)
    master_cf = (ROOT / "etc" / "master.cf").read_text() + (
        "procmail unix - n n - - pipe\n"
        f"  flags=DRhu user={user.pw_name} argv=/usr/bin/procmail -d ${{user}}\n")
    mta = mta_factory(master_cf=master_cf, transport_maps="inline:{pm.example=procmail:}",
                      relay_domains="pm.example", procmail_destination_recipient_limit="1")
    rcpt = f"{user.pw_name.upper()}@PM.example"
    send(mta.port, rcpt, "urgent: pipe")
    send(mta.port, rcpt, "routine")
    mta.wait_log(rf"(?s)to=<{re.escape(rcpt)}>, relay=procmail, .*status=sent \(delivered via procmail "
                 rf"service\).*to=<{re.escape(rcpt)}>, relay=procmail, .*status=sent", 30)
    wait_for(lambda: len(maildir_files(home / "Maildir" / ".urgent")) == 1 and
             len(maildir_files(home / "Maildir")) == 1, 10, "procmail's deliveries")
    urgent = maildir_files(home / "Maildir" / ".urgent")[0]
    text = urgent.read_text()
    assert "Subject: urgent: pipe" in text
    assert "Return-Path: <sender@remote.example>" in text                # flag R
    assert f"Delivered-To: {rcpt.lower()}" in text                        # flag D
    assert urgent.stat().st_uid == user.pw_uid                            # user=, not root
    assert "body of routine" in maildir_files(home / "Maildir")[0].read_text()


def test_procmail_as_mailbox_command(mta_factory, area: Path, unix_users) -> None:
    user = unix_users()
    home = prepare_user(user)
    mta = mta_factory(mailbox_command='/usr/bin/procmail -a "$EXTENSION"',
                      mail_spool_directory=str(area / "mail"))
    rcpt = f"{user.pw_name}@test.example"
    send(mta.port, rcpt, "urgent: local")
    mta.wait_log(rf"to=<{re.escape(rcpt)}>, relay=local, .*status=sent", 30)
    [delivered] = wait_for(lambda: maildir_files(home / "Maildir" / ".urgent"), 10, "the Maildir file")
    assert "body of urgent: local" in delivered.read_text()
    assert delivered.stat().st_uid == user.pw_uid
    assert not (area / "mail" / user.pw_name).exists()                    # not the spool mailbox
