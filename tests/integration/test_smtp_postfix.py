"""Interoperation with Postfix from Debian, both directions, all on 127.0.0.1.

- postpy -> Postfix: postpy's smtp client delivers to a private Postfix
  (tests/integration/postfixpeer.py), which stores the mail in a Maildir;
  SMTPUTF8 and DSN parameters (NOTIFY, ORCPT, ENVID, RET) pass through, as
  Postfix's own success notice shows.
- Postfix -> postpy: Postfix's smtp client relays to postpy's smtpd, postpy
  delivers locally; and Postfix's smtp-source load generator sends to
  postpy's smtpd.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from postfixpeer import SMTP_SOURCE, PostfixInstance, unavailable

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "-")

BODY = "Subject: interop\r\n\r\n.leading dot\r\nplain line\r\n"


@pytest.fixture
def area() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-pf-it-"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def postpy_with_maildir(mta_factory, area: Path, **params: str):
    """A postpy that takes mail for pp.test and puts bob's into a Maildir."""
    mta = mta_factory(start=False, mydestination="$myhostname, localhost, pp.test",
                      default_privs="nobody", **params)
    (mta.config_dir / "aliases").write_text(f"postmaster: root\nbob: {area}/Maildir/\n")
    built = mta.run("postalias", str(mta.config_dir / "aliases"))
    assert built.returncode == 0, built.stderr
    return mta.start()


def maildir(area: Path) -> list[bytes]:
    new = area / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def test_postpy_to_postfix(mta_factory):
    with PostfixInstance() as postfix:
        mta = mta_factory(transport_maps=f"inline:{{pf.test=smtp:[127.0.0.1]:{postfix.port}}}")
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
            client.sendmail("alice@test.example", ["bob@pf.test"], BODY.encode())
        found = mta.wait_log(rf"to=<bob@pf.test>, relay=127.0.0.1\[127.0.0.1\]:{postfix.port}, .*dsn=2.0.0, "
                             r"status=sent \(250 2.0.0 Ok: (?:\d+ bytes )?queued as (\w+)\)", 20)
        postfix.wait_log(rf"{found.group(1)}: to=<bob@pf.test>, relay=virtual, .*status=sent "
                         r"\(delivered to maildir\)")
        stored = wait_for(postfix.maildir, 10, "the message in Postfix's Maildir")
        assert isinstance(stored, list) and len(stored) == 1
        assert b"\n.leading dot\nplain line\n" in stored[0]
        assert b"from mx.test.example (" in stored[0]       # Postfix's Received: names postpy's EHLO


def test_postpy_to_postfix_smtputf8_and_dsn_parameters(mta_factory):
    with PostfixInstance() as postfix:
        mta = mta_factory(transport_maps=f"inline:{{pf.test=smtp:[127.0.0.1]:{postfix.port}}}")
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
            client.ehlo()
            # Postfix's success notice goes back to the sender, bob@pf.test, into the same Maildir.
            client.sendmail("bob@pf.test", ["bob@pf.test"], "Subject: ünïcode\r\n\r\nbødy\r\n".encode(),
                            mail_options=["SMTPUTF8", "BODY=8BITMIME", "ENVID=env-42", "RET=HDRS"],
                            rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Robert@pf.test"])
        queue_id = mta.wait_log(r"to=<bob@pf.test>, relay=127.0.0.1\[127.0.0.1\]:\d+, .*status=sent "
                                r"\(250 2.0.0 Ok: (?:\d+ bytes )?queued as (\w+)\)", 20).group(1)
        postfix.wait_log(rf"{queue_id}: sender delivery status notification: \w+")
        try:
            stored = wait_for(lambda: len(postfix.maildir()) == 2 and postfix.maildir(), 20,
                              "the message and Postfix's success notice")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(postfix.maildir())} files\n{postfix.log()[-3000:]}") from None
        assert isinstance(stored, list)
        notice = next(m for m in stored if b"multipart/report" in m)
        original = next(m for m in stored if m is not notice)
        assert b"Subject: \xc3\xbcn\xc3\xafcode" in original
        assert "bødy".encode() in original
        assert b"Original-Envelope-Id: env-42" in notice
        assert b"Original-Recipient: rfc822;Robert@pf.test" in notice
        assert b"Action: delivered" in notice


def test_postfix_to_postpy(mta_factory, area):
    mta = postpy_with_maildir(mta_factory, area)
    with PostfixInstance(transport={"pp.test": f"smtp:[127.0.0.1]:{mta.port}"}) as postfix:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
            client.sendmail("carol@pf.test", ["bob@pp.test"], BODY.encode())
        found = postfix.wait_log(rf"to=<bob@pp.test>, relay=127.0.0.1\[127.0.0.1\]:{mta.port}, .*"
                                 r"dsn=2.0.0, status=sent \(250 2.0.0 Ok: (?:\d+ bytes )?queued as (\w+)\)")
        mta.wait_log(rf"{found.group(1)}: to=<bob@pp.test>, relay=local, .*status=sent \(delivered to maildir\)",
                     20)
        stored = wait_for(lambda: maildir(area), 10, "the message in postpy's Maildir")
        assert isinstance(stored, list) and len(stored) == 1
        assert b"\n.leading dot\nplain line\n" in stored[0]
        assert b"from pf.test (" in stored[0]


@pytest.mark.skipif(SMTP_SOURCE is None, reason="smtp-source is not installed")
def test_smtp_source_to_postpy(mta_factory, area):
    mta = postpy_with_maildir(mta_factory, area)
    assert SMTP_SOURCE
    done = subprocess.run([SMTP_SOURCE, "-s", "4", "-m", "20", "-l", "1024", "-f", "load@test.example",
                           "-t", "bob@pp.test", f"127.0.0.1:{mta.port}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(maildir(area)) == 20, 60, "20 messages in the Maildir")
