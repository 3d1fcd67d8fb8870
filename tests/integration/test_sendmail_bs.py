"""sendmail -bs driven by Python's smtplib over a pipe, against a real system."""

from __future__ import annotations

import smtplib
import subprocess
from typing import IO

import pytest
from conftest import BIN
from test_sendmail import MASTER_CF, queued_with


class PipeSocket:
    """Just enough of a socket for smtplib: sendall, makefile, close."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def makefile(self, mode: str = "rb") -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()


def pipe_smtp(mta) -> tuple[smtplib.SMTP, subprocess.Popen[bytes]]:
    proc = subprocess.Popen([str(BIN / "sendmail"), "-bs"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mta.env())
    client = smtplib.SMTP(timeout=30)
    client.sock = PipeSocket(proc)  # type: ignore[assignment]
    code, banner = client.getreply()
    assert code == 220 and banner == b"mx.test.example ESMTP postpy"
    return client, proc


@pytest.fixture
def system(mta_factory):
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def test_smtplib_sends_through_sendmail_bs(system):
    client, proc = pipe_smtp(system)
    try:
        code, _ = client.ehlo("client.example")
        assert code == 250
        assert client.has_extn("pipelining") and client.has_extn("dsn") and client.has_extn("8bitmime")
        refused = client.sendmail("alice@example.org", ["bs1@example.net", "bs2@example.net"],
                                  b"Subject: over a pipe\r\n\r\n.leading dot\r\nline two\r\n",
                                  rcpt_options=["NOTIFY=FAILURE"])
        assert refused == {}
        client.sendmail("<>", ["bs3@example.net"], "Subject: second\r\n\r\nagain\r\n")
        code, message = client.docmd("VRFY", "bob")
        assert code == 502
        client.quit()
    finally:
        assert proc.wait(30) == 0
    env, data = queued_with(system, "bs1@example.net")
    assert env.sender == "alice@example.org"
    assert [(r.address, r.notify) for r in env.recipients] == [
        ("bs1@example.net", "FAILURE"), ("bs2@example.net", "FAILURE")]
    assert data.endswith(b"\n\n.leading dot\nline two\n")
    env2, _ = queued_with(system, "bs3@example.net")
    assert env2.sender == ""
    system.wait_log(rf"{env.queue_id}: uid=\d+ from=<alice@example.org>")


def test_refusals_and_end_of_input(system):
    client, proc = pipe_smtp(system)
    try:
        assert client.docmd("RCPT", "TO:<x@example.net>")[0] == 503
        assert client.docmd("MAIL", "FROM:<a@example.org> SIZE=999999999999")[0] == 552
        assert client.docmd("MAIL", "FROM:<a@example.org>")[0] == 250
        assert client.docmd("RCPT", "TO:<half@example.net>")[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: never finished\r\n\r\nno dot follows\r\n")
    finally:
        client.sock.close()
        assert proc.wait(30) == 0
    assert system.queue_ids("maildrop") == [] and system.queue_ids("incoming") == []


def test_bs_answers_smtp_from_a_shell_pipe(system):
    script = b"HELO me\nMAIL FROM:<sh@example.org>\nRCPT TO:<shpipe@example.net>\nDATA\nhi\n.\nQUIT\n"
    result = subprocess.run([str(BIN / "sendmail"), "-bs"], input=script, capture_output=True,
                            env=system.env(), timeout=60)
    assert result.returncode == 0
    codes = [line[:3] for line in result.stdout.decode().splitlines()]
    assert codes == ["220", "250", "250", "250", "354", "250", "221"]
    queued_with(system, "shpipe@example.net")
