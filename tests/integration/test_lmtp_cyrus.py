"""postpy's lmtp agent delivering into a real Cyrus IMAP server (cyrus-imapd):
lmtpd on a unix socket, the mailbox created by the Cyrus admin over IMAP, and the
delivered message listed by Cyrus's own imapd."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cyrus_helper  # noqa: E402
from test_lmtp_dovecot import submit  # noqa: E402

pytestmark = pytest.mark.skipif(bool(cyrus_helper.available()), reason=cyrus_helper.available() or "ok")


@pytest.fixture
def cyrus() -> Iterator[cyrus_helper.Cyrus]:
    server = cyrus_helper.start_cyrus(free_port())
    yield server
    cyrus_helper.remove(server)


def test_delivery_into_a_cyrus_mailbox(mta_factory, cyrus) -> None:
    cyrus.create_mailbox("user/bob")
    mta = mta_factory(transport_maps=f"inline:{{ cyrus.test=lmtp:unix:{cyrus.socket_path} }}")
    qid = submit(mta, ["bob@cyrus.test", "nobody@cyrus.test"], "hello cyrus",
                 sender="postmaster@test.example")
    where = f"{cyrus.socket_path}\\[{cyrus.socket_path}\\]"
    mta.wait_log(rf"postpy/lmtp\[\d+\]: {qid}: to=<bob@cyrus.test>, relay={where}, .*dsn=2.1.5, "
                 r"status=sent \(250 2.1.5 Success", 30)
    mta.wait_log(rf"{qid}: to=<nobody@cyrus.test>, relay={where}, .*dsn=5.1.1, status=bounced \(host "
                 rf"{where} said: 550-Mailbox unknown.* 550 5.1.1 User unknown \(in reply to RCPT TO "
                 r"command\)\)", 10)
    assert wait_for(lambda: cyrus.subjects("bob"), 20, "Cyrus to list the message") == [
        "Subject: hello cyrus"]
