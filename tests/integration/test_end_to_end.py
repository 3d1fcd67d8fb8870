"""The whole mail path: SMTP in, cleanup, qmgr, local, a mailbox out.

Nothing is stood in: a real master starts every daemon of etc/master.cf,
Python's smtplib is the client, and the test reads the delivered file.
"""

from __future__ import annotations

import os
import pwd
import smtplib
import stat
from pathlib import Path

import pytest
from conftest import IS_ROOT, wait_for

BODY = "Subject: end to end\r\n\r\nfirst line\r\n.leading dot\r\n"


def maildir_messages(home: Path) -> list[Path]:
    new = home / "Maildir" / "new"
    return sorted(new.iterdir()) if new.exists() else []


@pytest.mark.skipif(not IS_ROOT, reason="needs root to create a Unix user")
def test_smtp_to_maildir_as_the_recipient(mta_factory, unix_users):
    user = unix_users()
    mta = mta_factory(home_mailbox="Maildir/")
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        refused = client.sendmail("alice@example.org", [f"{user.pw_name}@mx.test.example"], BODY)
    assert refused == {}
    files = wait_for(lambda: maildir_messages(Path(user.pw_dir)), 20, "maildir delivery")
    assert len(files) == 1
    st = files[0].stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o600)
    data = files[0].read_bytes()
    assert data.startswith(b"Return-Path: <alice@example.org>\n")
    assert f"Delivered-To: {user.pw_name}@mx.test.example\n".encode() in data
    assert b"Received: from " in data
    assert data.endswith(b"first line\n.leading dot\n")
    line = mta.wait_log(rf"(\S+): to=<{user.pw_name}@mx.test.example>, relay=local, delay=[0-9.]+, "
                        r"delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2.0.0, status=sent \(delivered to maildir\)")
    queue_id = line.group(1)
    mta.wait_log(rf"{queue_id}: removed")
    assert mta.queue_ids("incoming") == mta.queue_ids("active") == mta.queue_ids("deferred") == []


def test_smtp_to_mbox_and_unknown_user_refused(mta_factory, area, unix_users):
    """As root, a created user; as an ordinary user (embedded mode), oneself."""
    me = unix_users().pw_name if IS_ROOT else pwd.getpwuid(os.getuid()).pw_name
    mta = mta_factory(mail_spool_directory=str(area / "mail"))
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        client.sendmail("bob@example.org", [f"{me}@mx.test.example"], BODY)
        client.mail("bob@example.org")
        code, reply = client.rcpt("nobody-here@mx.test.example")
    assert (code, reply[:5]) == (550, b"5.1.1")
    mbox = area / "mail" / me
    wait_for(lambda: mbox.exists() and b"leading dot" in mbox.read_bytes(), 20, "mbox delivery")
    assert mbox.read_bytes().startswith(b"From bob@example.org ")
