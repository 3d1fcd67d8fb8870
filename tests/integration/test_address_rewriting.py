"""Address rewriting in a real system: canonical maps, masquerading, virtual aliases.

A real master runs every daemon; smtplib and sendmail submit; local
delivers each final recipient through an alias to a file in a shared
directory, so the tests read what arrived and the delivery log lines
(``orig_to=``).  A second smtpd in master.cf has
``receive_override_options = no_address_mappings``.
"""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_for

DOMAIN = "test.example"
TARGETS = ("t1", "t2", "t3", "t4", "t5", "t6", "va", "sender")
VIRTUAL = ("inline:{ v.test=domain, catch.test=domain, {team@v.test=t1@test.example, t2@test.example}, "
           "chain@v.test=hop@v.test, hop@v.test=t3@test.example, @catch.test=t4@test.example, "
           "loop1@v.test=loop2@v.test, loop2@v.test=loop1@v.test, va@test.example=t1@test.example }")
CANONICAL = ("inline:{ sender@test.example=Sender.Name@example.com, "
             "oldname@test.example=t5@test.example }")


def start(mta_factory, area: Path):
    """One system for every test here; returns it and the port of the smtpd without mappings."""
    plain_port = free_port()
    master_cf = (ROOT / "etc" / "master.cf").read_text() + (
        f"127.0.0.1:{plain_port} inet n - n - - smtpd\n"
        "  -o receive_override_options=no_address_mappings\n")
    mta = mta_factory(master_cf=master_cf, start=False, mail_spool_directory=str(area / "mail"),
                      virtual_alias_maps=VIRTUAL, canonical_maps=CANONICAL,
                      masquerade_domains="example.com", masquerade_exceptions="root")
    shared = area / "shared"
    aliases = "postmaster: root\n" + "".join(f"{name}: {shared}/{name}\n" for name in TARGETS)
    (mta.config_dir / "aliases").write_text(aliases)
    built = mta.run("postalias", str(mta.config_dir / "aliases"))
    assert built.returncode == 0, built.stderr
    return mta.start(), plain_port


def delivered(mta, to: str, orig: str = "") -> str:
    orig_part = rf", orig_to=<{re.escape(orig)}>" if orig else ""
    line = mta.wait_log(rf"(\w+): to=<{re.escape(to)}>{orig_part}, relay=local, .*status=sent "
                        r"\(delivered to file: ", 30)
    return line.group(1)


def mailbox(area: Path, name: str, count: int = 1) -> str:
    path = area / "shared" / name
    wait_for(lambda: path.exists() and path.read_bytes().count(b"\nFrom ") + 1 >= count
             and path.read_bytes().startswith(b"From "), 30, f"mail in {name}")
    return path.read_text()


def test_virtual_aliases_one_to_many_recursion_and_catch_all(mta_factory, area: Path) -> None:
    mta, _ = start(mta_factory, area)
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        refused = client.sendmail("someone@example.org", ["team@v.test", "chain@v.test", "Anyone@catch.test"],
                                  "Subject: virtual\r\nTo: team@v.test\r\n\r\nhello\r\n")
        assert refused == {}
        client.mail("someone@example.org")
        code, reply = client.rcpt("nobody@v.test")
    assert (code, reply.decode()) == (
        550, "5.1.1 <nobody@v.test>: Recipient address rejected: User unknown in virtual alias table")
    queue_id = delivered(mta, "t1@test.example", "team@v.test")
    for to, orig in (("t2@test.example", "team@v.test"), ("t3@test.example", "chain@v.test"),
                     ("t4@test.example", "Anyone@catch.test")):
        assert delivered(mta, to, orig) == queue_id
    for name in ("t1", "t2", "t3", "t4"):
        text = mailbox(area, name)
        assert "Subject: virtual\n" in text and "To: team@v.test\n" in text    # headers untouched


def test_virtual_alias_loop_bounces_and_unknown_local_submission_bounces(mta_factory, area: Path) -> None:
    mta, _ = start(mta_factory, area)
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("t6@test.example", ["loop1@v.test"], "Subject: loop\r\n\r\nround\r\n")
    assert (caught.value.smtp_code, caught.value.smtp_error.decode()) == (
        554, "5.4.6 Virtual alias loop for <loop1@v.test>")
    sent = mta.run("sendmail", "-f", "t6@test.example", "loop1@v.test", input="Subject: local loop\n\nx\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(r"returned to sender: 5\.4\.6 Virtual alias loop for <loop1@v\.test>", 30)
    notice = mailbox(area, "t6")
    assert "Virtual alias loop for <loop1@v.test>" in notice and "Subject: local loop" in notice
    sent = mta.run("sendmail", "-f", "t6@test.example", "nobody@v.test", input="Subject: unknown\n\nx\n")
    assert sent.returncode == 0, sent.stderr
    mta.wait_log(r"to=<nobody@v\.test>, relay=none, .*dsn=5\.1\.1, status=bounced "
                 r"\(User unknown in virtual alias table\)", 30)
    mailbox(area, "t6", count=2)


def test_canonical_and_masquerading_of_envelope_and_headers(mta_factory, area: Path) -> None:
    mta, _ = start(mta_factory, area)
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        client.sendmail("sender@test.example", ["oldname@test.example"],
                        "From: Sender <sender@test.example>\r\nTo: oldname@test.example\r\n"
                        "Cc: joe@host.example.com\r\nSubject: canonical\r\n\r\nbody\r\n")
        client.sendmail("joe@host.example.com", ["t6@test.example"],
                        "From: joe@host.example.com\r\nReply-To: root@host.example.com\r\n"
                        "Subject: masquerade\r\n\r\nbody\r\n")
    delivered(mta, "t5@test.example", "oldname@test.example")
    text = mailbox(area, "t5")
    assert text.startswith("From Sender.Name@example.com ")
    assert "From: Sender <Sender.Name@example.com>\n" in text
    assert "To: t5@test.example\n" in text and "Cc: joe@example.com\n" in text
    delivered(mta, "t6@test.example")
    text = mailbox(area, "t6")
    assert text.startswith("From joe@example.com ")          # envelope sender masqueraded
    assert "From: joe@example.com\n" in text
    assert "Reply-To: root@host.example.com\n" in text       # masquerade_exceptions


def test_no_address_mappings_on_a_second_smtpd(mta_factory, area: Path) -> None:
    mta, plain_port = start(mta_factory, area)
    message = "From: sender@test.example\r\nTo: va@test.example\r\nSubject: {}\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", plain_port, timeout=10) as client:
        client.sendmail("sender@test.example", ["va@test.example"], message.format("plain"))
    delivered(mta, "va@test.example")
    text = mailbox(area, "va")
    assert text.startswith("From sender@test.example ") and "From: sender@test.example\n" in text
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        client.sendmail("sender@test.example", ["va@test.example"], message.format("mapped"))
    delivered(mta, "t1@test.example", "va@test.example")
    text = mailbox(area, "t1")
    assert text.startswith("From Sender.Name@example.com ") and "Subject: mapped" in text
