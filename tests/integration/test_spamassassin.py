"""SpamAssassin as a filter: smtpd -o content_filter=spamfilter:dummy, the
pipe agent running spamc, spamc handing the message back with postpy's
sendmail, local delivery of the result.

A real spamd (Debian's spamd package) is started once for the module on a
free loopback port with its own site configuration in a temporary tree
(the rules are the ones the spamassassin package ships in
/usr/share/spamassassin; no network tests, no Bayes).  The configuration
is the README's "SpamAssassin as a filter" example, as written.
"""

from __future__ import annotations

import mailbox
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BIN, IS_ROOT, ROOT, free_port, wait_for
from smtppeers import PeerState, ThreadPeer

SPAMD = shutil.which("spamd") or ("/usr/sbin/spamd" if os.path.exists("/usr/sbin/spamd") else None)
SPAMC = shutil.which("spamc")
pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="needs root: the pipe agent switches to user="),
    pytest.mark.skipif(SPAMD is None or SPAMC is None, reason="spamd/spamc not installed (Debian: spamd, spamc)"),
]

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SITE_CF = """use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
"""

# The README's example: main.cf needs nothing; master.cf gets these lines.
SMTPD_FILTER = "  -o content_filter=spamfilter:dummy\n"
SPAMFILTER = ("spamfilter unix  -       n       n       -       -       pipe\n"
              "  flags=Rq user=nobody argv=/usr/bin/spamc -d 127.0.0.1 -p {spamd_port}"
              " -e {sendmail} -C {config_dir} -oi -f ${{sender}} ${{recipient}}\n")


@pytest.fixture(scope="module")
def spamd() -> Iterator[int]:
    """A running spamd on a free loopback port (started once: it is slow)."""
    tree = Path(tempfile.mkdtemp(prefix="postpy-spamd-"))
    site, home = tree / "site", tree / "home"
    site.mkdir()
    home.mkdir()
    for pre in Path("/etc/spamassassin").glob("*.pre"):     # plugin loading lines, shipped with spamassassin
        shutil.copy(pre, site)
    (site / "local.cf").write_text(SITE_CF)
    os.chmod(tree, 0o755)
    shutil.chown(home, "nobody")
    port = free_port()
    assert SPAMD is not None
    proc = subprocess.Popen(
        [SPAMD, f"--listen=127.0.0.1:{port}", "--nouser-config", f"--siteconfigpath={site}",
         "-u", "nobody", "-g", "nogroup", f"--pidfile={tree}/spamd.pid", "-H", str(home),
         "--syslog=stderr", "--min-children=1", "--max-children=2"],
        stdout=subprocess.DEVNULL, stderr=open(tree / "spamd.log", "wb"), start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"spamd exited:\n{(tree / 'spamd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            return False
        return True

    try:
        wait_for(ready, 60, "spamd to listen")
        yield port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        shutil.rmtree(tree, ignore_errors=True)


def test_spam_is_tagged_clean_mail_passes_and_nothing_is_filtered_twice(
        mta_factory, area: Path, unix_users, spamd: int) -> None:
    user = unix_users()
    mta = mta_factory(start=False, mail_spool_directory=str(area / "mail"))
    master_cf = (ROOT / "etc" / "master.cf").read_text().replace(
        "127.0.0.1:2525    inet  n       -       n       -       -       smtpd\n",
        f"127.0.0.1:{mta.port}    inet  n       -       n       -       -       smtpd\n{SMTPD_FILTER}")
    assert SMTPD_FILTER in master_cf
    master_cf += SPAMFILTER.format(spamd_port=spamd, sendmail=BIN / "sendmail", config_dir=mta.config_dir)
    (mta.config_dir / "master.cf").write_text(master_cf)
    mta.start()

    rcpt = f"{user.pw_name}@test.example"
    clean_body = "Hello,\r\nthe minutes of today's meeting are below.\r\n\r\nRegards\r\n"
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as smtp:
        smtp.sendmail("sender@remote.example", [rcpt],
                      f"From: sender@remote.example\r\nTo: {rcpt}\r\nSubject: gtube\r\n\r\n{GTUBE}\r\n")
        smtp.sendmail("sender@remote.example", [rcpt],
                      f"From: sender@remote.example\r\nTo: {rcpt}\r\nSubject: clean\r\n\r\n{clean_body}")

    # Each message goes through the filter once, and its re-injected copy
    # (from pickup, without the content_filter attribute) to the mailbox.
    filtered = mta.wait_log(r"(?s)(\w+): to=<[^>]+>, relay=spamfilter, .*status=sent \(delivered via "
                            r"spamfilter service\).*\n.*relay=spamfilter, .*status=sent", 60)
    assert filtered
    mbox_path = area / "mail" / user.pw_name
    wait_for(lambda: mbox_path.exists() and len(mailbox.mbox(str(mbox_path))) == 2, 60,
             "two messages in the mailbox")
    log = mta.log()
    through_filter = [line for line in log.splitlines() if "relay=spamfilter" in line]
    to_mailbox = [line for line in log.splitlines() if "relay=local" in line and "status=sent" in line]
    assert len(through_filter) == 2 and len(to_mailbox) == 2
    filtered_ids = {line.split(": to=")[0].split()[-1] for line in through_filter}
    delivered_ids = {line.split(": to=")[0].split()[-1] for line in to_mailbox}
    assert not filtered_ids & delivered_ids             # the re-injected copies were not filtered again

    by_subject = {m["Subject"]: m for m in mailbox.mbox(str(mbox_path))}
    spam, clean = by_subject["gtube"], by_subject["clean"]
    assert spam["X-Spam-Flag"] == "YES"
    assert "GTUBE" in spam["X-Spam-Status"]
    assert clean["X-Spam-Flag"] is None
    assert clean["X-Spam-Status"].startswith("No")
    assert clean.get_payload() == clean_body.replace("\r\n", "\n")
    assert clean["Return-Path"] == "<sender@remote.example>"


# The after-queue pattern of Postfix's FILTER_README with an SMTP filter: main.cf
# sends all mail to "scan:[127.0.0.1]:FILTER_PORT"; the filter (here a small SMTP
# server that runs spamc on each message) hands the result back to a second
# smtpd that neither filters nor rewrites again.
AFTER_QUEUE_MASTER_CF = """scan      unix  -       -       n       -       10      smtp
127.0.0.1:{return_port} inet n  -       n       -       10      smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_address_mappings
  -o mynetworks=127.0.0.0/8
  -o smtpd_relay_restrictions=permit_mynetworks,reject
"""


def spamc_filter(spamd_port: int, return_port: int) -> Callable[[str, list[str], bytes], str]:
    """A content filter: the message through spamc, then back to postpy by SMTP."""
    def handle(sender: str, rcpts: list[str], content: bytes) -> str:
        assert SPAMC is not None
        checked = subprocess.run([SPAMC, "-d", "127.0.0.1", "-p", str(spamd_port)], input=content,
                                 capture_output=True, timeout=60)
        if checked.returncode != 0 or not checked.stdout:
            return "451 4.3.0 spamc failed"
        try:
            with smtplib.SMTP("127.0.0.1", return_port, timeout=30) as smtp:
                smtp.sendmail(sender, rcpts, checked.stdout)
        except (OSError, smtplib.SMTPException) as exc:
            return f"451 4.3.0 re-injection failed: {exc}"
        return "250 2.0.0 Ok: filtered"
    return handle


def test_after_queue_smtp_content_filter_tags_spam_once(mta_factory, area: Path, unix_users,
                                                        spamd: int) -> None:
    user = unix_users()
    return_port = free_port()
    with ThreadPeer(PeerState(name="filter.test")) as peer:
        peer.state.on_message = spamc_filter(spamd, return_port)
        mta = mta_factory(start=False, mail_spool_directory=str(area / "mail"),
                          content_filter=f"scan:[127.0.0.1]:{peer.port}")
        master_cf = (ROOT / "etc" / "master.cf").read_text().replace("127.0.0.1:2525 ", f"127.0.0.1:{mta.port} ")
        master_cf += AFTER_QUEUE_MASTER_CF.format(return_port=return_port)
        (mta.config_dir / "master.cf").write_text(master_cf)
        mta.start()

        rcpt = f"{user.pw_name}@test.example"
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as smtp:
            smtp.sendmail("sender@remote.example", [rcpt],
                          f"From: sender@remote.example\r\nTo: {rcpt}\r\nSubject: gtube\r\n\r\n{GTUBE}\r\n")
        # Local submissions are filtered too (content_filter in main.cf applies to pickup).
        subprocess.run([str(BIN / "sendmail"), "-C", str(mta.config_dir), "-f", "local@test.example", rcpt],
                       input=f"To: {rcpt}\nSubject: local clean\n\nnothing to see\n".encode(),
                       check=True, timeout=30)
        mbox_path = area / "mail" / user.pw_name
        wait_for(lambda: mbox_path.exists() and len(mailbox.mbox(str(mbox_path))) == 2, 60,
                 "two messages in the mailbox")
        assert len(peer.state.messages) == 2                # each went through the filter once
    log = mta.log()
    relayed = [line for line in log.splitlines() if f"relay=127.0.0.1[127.0.0.1]:{peer.port}" in line]
    assert len(relayed) == 2 and all("status=sent" in line for line in relayed)
    by_subject = {m["Subject"]: m for m in mailbox.mbox(str(mbox_path))}
    assert by_subject["gtube"]["X-Spam-Flag"] == "YES"
    assert by_subject["local clean"]["X-Spam-Flag"] is None
    assert by_subject["local clean"]["X-Spam-Status"].startswith("No")
