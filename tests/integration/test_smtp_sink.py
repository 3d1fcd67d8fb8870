"""postpy's smtp client against Postfix's smtp-sink: sent, deferred (4xx), bounced (5xx).

Mail enters through postpy's smtpd and is routed by relayhost or
transport_maps to smtp-sink on 127.0.0.1:<free port>.
"""

from __future__ import annotations

import os
import smtplib

import pytest
from conftest import IS_ROOT
from smtppeers import SMTP_SINK, SmtpSink, missing_reason

pytestmark = pytest.mark.skipif(SMTP_SINK is None and not IS_ROOT, reason=missing_reason("smtp-sink"))

BODY = "Subject: relay test\r\n\r\n.a line that starts with a dot\r\nlast line\r\n"


def submit(mta, rcpts: list[str], body: str = BODY, sender: str = "sender@test.example") -> str:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail(sender, rcpts, body.encode())
    return mta.wait_log(rf"(\w+): from=<{sender}>, size=\d+, nrcpt={len(rcpts)}", 20).group(1)


def test_relayhost_to_smtp_sink(mta_factory, tmp_path):
    with SmtpSink() as sink:
        mta = mta_factory(relayhost=f"[127.0.0.1]:{sink.port}")
        queue_id = submit(mta, ["bob@remote.test", "carol@remote.test"])
        for rcpt in ("bob@remote.test", "carol@remote.test"):
            mta.wait_log(rf"{queue_id}: to=<{rcpt}>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, "
                         r"delay=[0-9.]+, delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2.0.0, "
                         r"status=sent \(250 2.0.0 Ok", 20)
        mta.wait_log(rf"{queue_id}: removed", 20)
        messages = sink.messages()
    assert len(messages) == 1
    dumped = messages[0]
    assert b"X-Rcpt-Args: <bob@remote.test>" in dumped and b"X-Rcpt-Args: <carol@remote.test>" in dumped
    assert b"X-Mail-Args: <sender@test.example>" in dumped
    # smtp-sink stores the content as received, dot-stuffing undone
    assert b"\n.a line that starts with a dot" in dumped.replace(b"\r\n", b"\n")


def test_transport_maps_route_to_smtp_sink(mta_factory, tmp_path):
    with SmtpSink() as sink:
        mta = mta_factory(transport_maps=f"inline:{{routed.test=smtp:[127.0.0.1]:{sink.port}}}")
        queue_id = submit(mta, ["x@routed.test"])
        mta.wait_log(rf"{queue_id}: to=<x@routed.test>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, .*status=sent", 20)


def test_4xx_at_rcpt_defers(mta_factory, tmp_path):
    with SmtpSink("-r", "RCPT") as sink:
        mta = mta_factory(relayhost=f"[127.0.0.1]:{sink.port}")
        queue_id = submit(mta, ["bob@remote.test"])
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, .*"
                     r"dsn=4.3.0, status=deferred \(host 127.0.0.1\[127.0.0.1\] said: 450 4.3.0 Error: "
                     r"command failed \(in reply to RCPT TO command\)\)", 20)
        assert sink.messages() == []
    from conftest import wait_for
    wait_for(lambda: queue_id in mta.queue_ids("deferred"), 10, "message in deferred/")


@pytest.mark.parametrize("command, in_reply_to", [("RCPT", "RCPT TO"), (".", "end of DATA"),
                                                  ("MAIL", "MAIL FROM")])
def test_5xx_bounces_with_the_server_text(mta_factory, tmp_path, command, in_reply_to):
    with SmtpSink("-f", command) as sink:
        mta = mta_factory(relayhost=f"[127.0.0.1]:{sink.port}")
        queue_id = submit(mta, ["bob@remote.test"])
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, .*"
                     r"dsn=5.3.0, status=bounced \(host 127.0.0.1\[127.0.0.1\] said: 5\d\d 5.3.0 Error: "
                     rf"command failed \(in reply to {in_reply_to} command\)\)", 20)


def test_421_after_mail_defers(mta_factory, tmp_path):
    with SmtpSink("-Q", "MAIL") as sink:
        mta = mta_factory(relayhost=f"[127.0.0.1]:{sink.port}")
        queue_id = submit(mta, ["bob@remote.test"])
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, "
                     r".*status=deferred \(host "
                     r"127.0.0.1\[127.0.0.1\] said: 421 ", 20)


@pytest.mark.skipif(not IS_ROOT, reason="chroot needs root")
def test_chrooted_smtp_agent_relays(mta_factory):
    from conftest import ROOT
    master_cf = (ROOT / "etc" / "master.cf").read_text()
    chrooted = "\n".join("smtp unix - - y - - smtp" if line.startswith("smtp ") else line
                         for line in master_cf.splitlines()) + "\n"
    assert "smtp unix - - y" in chrooted
    with SmtpSink() as sink:
        mta = mta_factory(master_cf=chrooted, relayhost=f"[127.0.0.1]:{sink.port}")
        queue_id = submit(mta, ["bob@remote.test"])
        mta.wait_log(rf"{queue_id}: to=<bob@remote.test>, relay=127.0.0.1\[127.0.0.1\]:{sink.port}, "
                     r".*status=sent \(250 ", 20)
        assert len(sink.messages()) == 1
        agents = [pid for pid, args in mta.children().items() if args.split()[0] == "postpy/smtp"]
        assert agents and os.readlink(f"/proc/{agents[0]}/root") == str(mta.queue_dir)
