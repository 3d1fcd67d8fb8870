"""Postfix's log readers and control command after `make install` replaced Postfix.

The module installs into a throwaway tree that held Postfix's `postfix`
command (a stand-in Debian package owns it where dpkg-deb exists, else a
plain file), as test_install.py does, so install sets it aside and takes
Postfix's place: the main.cf it creates says ``syslog_name = postfix``.  The
installed system is then driven only through the installed `postfix`
command (start, status, check, reload, flush, stop), with the submission
service from the installed master.cf switched on.  The test sends N
messages that are delivered (one through the installed sendmail, the others
over SMTP), M recipients refused at RCPT (relay denied, unknown user) and K
failed AUTH attempts on the submission port, then runs the real pflogsumm and
fail2ban-regex (with fail2ban's stock ``postfix`` filter and its ``auth``
mode) over the log and checks that they count exactly what was sent.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import IS_ROOT, free_port, wait_for
from submission_setup import client_context, make_certificate, plain_blob
from test_install import Installed, build_stand_in_package, drop_stand_in_package

PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
FAIL2BAN_REGEX = shutil.which("fail2ban-regex")
POSTFIX_FILTER = "/etc/fail2ban/filter.d/postfix.conf"
PACKAGE = "postpy-log-tools-test"

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="make install needs root (users, ownership, dpkg-divert)"),
    pytest.mark.skipif(not os.access(PFLOGSUMM, os.X_OK), reason="pflogsumm is not installed "
                                                                 "(scripts/test-deps installs it)"),
    pytest.mark.skipif(FAIL2BAN_REGEX is None or not os.path.exists(POSTFIX_FILTER),
                       reason="fail2ban is not installed (scripts/test-deps installs it)"),
    pytest.mark.timeout(240),
]

DELIVERED = 3                                                   # N (one of them by sendmail)
REJECTED = ["far@elsewhere.example", "nosuch@mx.test.example",  # M: relay denied, unknown user
            "other@elsewhere.example"]
AUTH_FAILURES = 2                                               # K
SASL_USER, SASL_PASSWORD = "alice", "N0t-the-Right-0ne-pw"


@dataclass
class Replaced(Installed):
    submission_port: int = 0


def switch_on_submission(master_cf: Path, port: int) -> str:
    """Uncomment the installed master.cf's submission service, on a loopback port."""
    lines = master_cf.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"#587\s+inet\s", ln))
    lines[start] = re.sub(r"^#587\s+", f"127.0.0.1:{port} ", lines[start])
    i = start + 1
    while i < len(lines) and lines[i].startswith("#  -o"):
        lines[i] = lines[i][1:]
        i += 1
    master_cf.write_text("\n".join(lines) + "\n")
    return "\n".join(lines[start:i])


@pytest.fixture(scope="module")
def replaced() -> Iterator[Replaced]:
    """postpy installed where Postfix was, configured for loopback, not yet started."""
    base = Path(tempfile.mkdtemp(prefix="postpy-logtools-"))
    base.chmod(0o755)     # the daemons (as postpy) and the test user must reach the tree
    inst = Replaced(base, free_port(), submission_port=free_port())
    sbin = inst.prefix / "sbin"
    try:
        if shutil.which("dpkg-deb") and shutil.which("dpkg-divert"):
            drop_stand_in_package(inst, PACKAGE)
            subprocess.run(["dpkg", "-i", str(build_stand_in_package(inst, PACKAGE))], check=True,
                           capture_output=True, timeout=60)
        else:
            sbin.mkdir(parents=True)
            (sbin / "postfix").write_text("#!/bin/sh\necho packaged postfix\n")
            (sbin / "postfix").chmod(0o755)
        inst.make("install")
        (base / "tls").mkdir()
        certificate = make_certificate(base / "tls")
        out = inst.command(sbin / "postconf", "-e", f"maillog_file = {inst.maillog}",
                           "home_mailbox = Maildir/", "myhostname = mx.test.example",
                           "mydestination = $myhostname, localhost", "inet_interfaces = 127.0.0.1",
                           "mynetworks = 192.0.2.1/32",    # the loopback client may not relay
                           f"smtpd_tls_cert_file = {certificate[0]}",
                           f"smtpd_tls_key_file = {certificate[1]}",
                           "smtpd_error_sleep_time = 0", "smtpd_sasl_failure_delay = 0",
                           "service_throttle_time = 5s")
        assert out.returncode == 0, out.stderr
        master_cf = inst.config_dir / "master.cf"
        text, count = re.subn(r"^25\s+inet", f"127.0.0.1:{inst.port} inet", master_cf.read_text(),
                              flags=re.M)
        assert count == 1, text
        master_cf.write_text(text)
        service = switch_on_submission(master_cf, inst.submission_port)
        assert "-o syslog_name=postfix/submission" in service, service
        out = inst.command(sbin / "postpy", "passwd", "add", SASL_USER, input="the-real-password\n")
        assert out.returncode == 0, out.stderr
        yield inst
    finally:
        pid = inst.master_pid()
        if pid and os.path.exists(sbin / "postfix"):
            inst.command(sbin / "postfix", "abort")
        pid = inst.master_pid()
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if inst.manifest.exists():
            inst.make("uninstall")
        drop_stand_in_package(inst, PACKAGE)
        shutil.rmtree(base, ignore_errors=True)


def maildir_count(home: Path) -> int:
    new = home / "Maildir" / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


def send_traffic(inst: Replaced, user: str) -> None:
    """N delivered messages, M refused recipients, K failed logins."""
    out = inst.command(inst.prefix / "sbin" / "sendmail", "-f", "sender@client.example", user,
                       input="Subject: log tools, local\n\nsubmitted with sendmail\n")
    assert out.returncode == 0, out.stderr
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as smtp:
        smtp.ehlo("client.example")
        for n in range(DELIVERED - 1):
            smtp.sendmail("sender@client.example", [f"{user}@mx.test.example"],
                          f"Subject: log tools {n}\r\n\r\nbody {n}\r\n")
        smtp.mail("sender@client.example")
        for rcpt in REJECTED:
            code, _ = smtp.rcpt(rcpt)
            assert code in (550, 554), (rcpt, code)
        smtp.rset()
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=30) as smtp:
        smtp.ehlo("client.example")
        smtp.starttls(context=client_context())
        smtp.ehlo("client.example")
        for _ in range(AUTH_FAILURES):      # one AUTH each (smtplib's login() tries every mechanism)
            code, _ = smtp.docmd("AUTH", "PLAIN " + plain_blob(SASL_USER, SASL_PASSWORD))
            assert code == 535, code


def pflogsumm_totals(log: Path) -> dict[str, int]:
    """pflogsumm's Grand Totals: {"received": n, "delivered": n, "rejected": n, ...}."""
    out = subprocess.run([PFLOGSUMM, str(log)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    totals = {}
    for match in re.finditer(r"^\s*(\d+)\s+(received|delivered|forwarded|deferred|bounced|rejected)\b",
                             out.stdout, re.M):
        totals.setdefault(match.group(2), int(match.group(1)))
    return totals


def fail2ban_matches(log: Path, filter_spec: str) -> list[str]:
    """The client addresses fail2ban-regex finds with the given stock filter."""
    assert FAIL2BAN_REGEX
    out = subprocess.run([FAIL2BAN_REGEX, "--out", "ip", str(log), filter_spec], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()


def test_postfix_tools_read_the_log_of_a_replaced_postfix(
        replaced: Replaced, unix_users: Callable[[], pwd.struct_passwd]) -> None:
    inst = replaced
    postfix = inst.prefix / "sbin" / "postfix"
    user = unix_users()
    home = Path(user.pw_dir)
    out = inst.command(postfix, "check")
    assert out.returncode == 0, out.stderr
    out = inst.command(postfix, "start")
    assert out.returncode == 0, out.stderr
    try:
        status = inst.command(postfix, "status")
        assert status.returncode == 0 and "is running" in status.stderr, status.stderr
        send_traffic(inst, user.pw_name)
        wait_for(lambda: maildir_count(home) == DELIVERED, 30, f"{DELIVERED} messages delivered")
        reloads = inst.log().count("reload -- version")
        out = inst.command(postfix, "-c", inst.config_dir, "reload")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: inst.log().count("reload -- version") > reloads, 10, "the reload in the log")
        out = inst.command(postfix, "flush")
        assert out.returncode == 0, out.stderr
    finally:
        out = inst.command(postfix, "stop")
    assert out.returncode == 0, out.stderr
    assert inst.command(postfix, "status").returncode == 1
    assert maildir_count(home) == DELIVERED
    log = inst.log()
    assert re.search(r" postfix/smtpd\[\d+\]: connect from ", log), log
    assert re.search(r" postfix/submission/smtpd\[\d+\]: ", log), log
    assert re.search(r" postfix/pickup\[\d+\]: \w+: uid=0 from=<sender@client.example>", log), log
    assert not re.search(r" postpy/\w+\[", log), "a program logged under postpy's own tag"

    totals = pflogsumm_totals(inst.maillog)
    assert totals.get("received") == DELIVERED, totals
    assert totals.get("delivered") == DELIVERED, totals
    assert totals.get("rejected") == len(REJECTED), totals
    assert totals.get("deferred") == 0 and totals.get("bounced") == 0, totals

    found = fail2ban_matches(inst.maillog, POSTFIX_FILTER)
    assert found == ["127.0.0.1"] * len(REJECTED), log
    found = fail2ban_matches(inst.maillog, "postfix[mode=auth]")
    assert found == ["127.0.0.1"] * AUTH_FAILURES, log
