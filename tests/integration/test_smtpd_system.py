"""smtpd in a started system (real master, smtpd and cleanup processes).

master.cf holds only smtpd and cleanup, so accepted mail stays in
``incoming/`` where the test reads it back with qfile.read_all.  The
client side is Python's smtplib and raw sockets; swaks has its own file
(test_smtpd_swaks.py).
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from postpy.queue import qfile

MASTER_CF = """\
127.0.0.1:{port} inet  n       -       n       -       -       smtpd
cleanup           unix  -       -       n       -       0       cleanup
anvil             unix  -       -       n       -       1       anvil
"""

PARAMS = {
    "mynetworks": "127.0.0.1/32",
    "local_recipient_maps": "inline:{alice=x, bob=x, carol=x, postmaster=x}",
    "recipient_delimiter": "+",
    "smtpd_error_sleep_time": "0",
    "smtpd_client_event_limit_exceptions": "",
}


@pytest.fixture
def system(mta_factory: Any) -> Any:
    return mta_factory(master_cf=MASTER_CF, **PARAMS)


def queued(mta: Any) -> dict[str, tuple[qfile.Envelope, bytes]]:
    """Every complete queue file in incoming/, parsed."""
    return {qid: qfile.read_all(str(mta.queue_dir / "incoming" / qid))
            for qid in mta.queue_ids("incoming")}


def wait_queued(mta: Any, count: int) -> dict[str, tuple[qfile.Envelope, bytes]]:
    wait_for(lambda: len(mta.queue_ids("incoming")) >= count, 10, f"{count} queue files")
    files = queued(mta)
    assert len(files) == count, sorted(files)
    return files


def queue_id_of(reply: str | bytes) -> str:
    text = reply.decode() if isinstance(reply, bytes) else reply
    m = re.search(r"queued as (\S+)", text)
    assert m, text
    return m.group(1)


def body_of(content: bytes) -> bytes:
    return content.split(b"\n\n", 1)[1]


class Raw:
    """Byte-exact client: what a test sends is what smtpd reads."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.buf = b""

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"closed after {lines!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, line: str | bytes) -> str:
        self.sock.sendall(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return self.reply()

    def start(self, helo: str = "client.example") -> None:
        assert self.reply().startswith("220 ")
        assert self.cmd(f"EHLO {helo}").startswith("250-")

    def at_eof(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True


def test_every_command_and_the_log(system: Any) -> None:
    c = Raw(system.port)
    assert c.reply() == "220 mx.test.example ESMTP postpy"
    ehlo = c.cmd("EHLO client.example").split("\n")
    assert ehlo[0] == "250-mx.test.example" and "250 CHUNKING" in ehlo
    assert "250-SIZE 10240000" in ehlo and "250-PIPELINING" in ehlo and "250-DSN" in ehlo
    assert c.cmd("HELO client.example") == "250 mx.test.example"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("HELP").startswith("214 2.0.0")
    assert c.cmd("VRFY alice") == "502 5.5.1 VRFY command is disabled"
    assert c.cmd("FOO") == "502 5.5.2 Error: command not recognized"
    assert c.cmd("RCPT TO:<alice@test.example>") == "503 5.5.1 Error: need MAIL command"
    assert c.cmd("MAIL FROM:<a b>") == "501 5.1.7 Bad sender address syntax"
    assert c.cmd("MAIL FROM:<sender@example.org> SIZE=100") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example> NOTIFY=FAILURE") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<nobody@test.example>").startswith("550 5.1.1 <nobody@test.example>")
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
    assert c.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<bob@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    queue_id = queue_id_of(c.cmd(b"Subject: t\r\n\r\nbody\r\n.\r\n"))
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    env, content = wait_queued(system, 1)[queue_id]
    assert env.sender == "" and [r.address for r in env.recipients] == ["bob@test.example"]
    assert body_of(content) == b"body\n"
    system.wait_log(r"postpy/smtpd\[\d+\]: connect from localhost\[127\.0\.0\.1\]")
    system.wait_log(rf"postpy/smtpd\[\d+\]: {queue_id}: client=localhost\[127\.0\.0\.1\]")
    system.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 "
                    r"<nobody@test\.example>: Recipient address rejected: User unknown in local "
                    r"recipient table; from=<sender@example\.org> to=<nobody@test\.example> "
                    r"proto=SMTP helo=<client\.example>")
    system.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] helo=1 ehlo=1 mail=2/3 rcpt=2/4 "
                    r"data=1/2 rset=1 noop=1 vrfy=0/1 help=1 quit=1 unknown=0/1 commands=11/17")


def test_byte_faithful_multi_recipient_8bit_and_utf8(system: Any) -> None:
    body = (b"..stuffed\r\n...two\r\n8bit \xe9\xfc \x00 nul, bare \r cr\r\n.\r\nnot the end\r\n"
            + "UTF-8 ☃\r\n".encode())
    with smtplib.SMTP("127.0.0.1", system.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail("jörg@bücher.example", ["SMTPUTF8", "BODY=8BITMIME"])
        for rcpt in ("alice@test.example", "bob+ext@test.example", "carol@test.example"):
            assert s.rcpt(rcpt)[0] == 250
        code, reply = s.data(b"Subject: bytes\r\n\r\n" + body)
        assert code == 250
    env, content = wait_queued(system, 1)[queue_id_of(reply)]
    assert env.sender == "jörg@bücher.example"
    assert [r.address for r in env.recipients] == [
        "alice@test.example", "bob+ext@test.example", "carol@test.example"]
    # smtplib stuffs every leading dot; smtpd must give back exactly the original.
    assert body_of(content) == body.replace(b"\r\n", b"\n")
    assert env.attrs.get("smtputf8") == "yes"


def test_ten_megabyte_message(system: Any) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = line * (10_000_000 // len(line))
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", system.port, timeout=30) as s:
        s.ehlo()
        assert s.mail("a@example.org", [f"SIZE={len(body)}"])[0] == 250
        assert s.rcpt("alice@test.example")[0] == 250
        code, reply = s.data(b"Subject: big\r\n\r\n" + body)
    assert code == 250, reply
    _, content = wait_queued(system, 1)[queue_id_of(reply)]
    assert body_of(content) == body.replace(b"\r\n", b"\n")
    assert time.monotonic() - started < 20


def test_pipelining(system: Any) -> None:
    c = Raw(system.port)
    c.start()
    c.sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@test.example>\r\n"
                   b"RCPT TO:<nobody@test.example>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n")
    replies = [c.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == ["250", "250", "550", "250", "354"]
    c.sock.sendall(b"one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<carol@test.example>\r\nDATA\r\n")
    first = queue_id_of(c.reply())
    assert [c.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    c.sock.sendall(b"two\r\n.\r\nQUIT\r\n")
    second = queue_id_of(c.reply())
    assert c.reply() == "221 2.0.0 Bye"
    files = wait_queued(system, 2)
    assert [r.address for r in files[first][0].recipients] == ["alice@test.example", "bob@test.example"]
    assert body_of(files[second][1]) == b"two\n"


SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n"]


def test_smuggling_variants_yield_one_message_each(system: Any) -> None:
    ids = []
    for marker in SMUGGLING:
        c = Raw(system.port)
        c.start()
        assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
        assert c.cmd("DATA").startswith("354")
        c.sock.sendall(b"Subject: carrier\r\n\r\nbefore" + marker
                       + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n"
                       + b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
        ids.append(queue_id_of(c.reply()))
        assert c.reply() == "221 2.0.0 Bye"
    files = wait_queued(system, len(SMUGGLING))
    assert sorted(files) == sorted(ids)
    for env, content in files.values():
        assert [r.address for r in env.recipients] == ["alice@test.example"]
        assert b"MAIL FROM:<evil@example.org>" in content and b"smuggled\n" in content


TRICKS = [
    "victim@elsewhere.example",
    "victim%elsewhere.example@test.example",
    "elsewhere.example!victim@test.example",
    '"victim@elsewhere.example"@test.example',
    "@test.example:victim@elsewhere.example",
]


def test_relay_tricks_refused_outside_mynetworks(system: Any) -> None:
    c = Raw(system.port, source="127.0.0.2")
    c.start("outside.example")
    assert c.cmd("MAIL FROM:<spam@example.net>") == "250 2.1.0 Ok"
    for address in TRICKS:
        assert c.cmd(f"RCPT TO:<{address}>") == f"554 5.7.1 <{address}>: Relay access denied"
    assert c.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    system.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.2\]: 554 5\.7\.1 "
                    r"<victim@elsewhere\.example>: Relay access denied; from=<spam@example\.net> "
                    r"to=<victim@elsewhere\.example> proto=ESMTP helo=<outside\.example>")
    assert system.queue_ids("incoming") == []


def test_disconnect_mid_data_queues_nothing(system: Any) -> None:
    c = Raw(system.port)
    c.start()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<alice@test.example>")
    assert c.cmd("DATA").startswith("354")
    c.sock.sendall(b"Subject: cut\r\n\r\n" + b"x" * 200000)
    c.sock.close()
    system.wait_log(r"lost connection after DATA \(\d+ bytes\) from localhost\[127\.0\.0\.1\]")
    # Nothing with a final name, and cleanup dropped its temporary file too.
    wait_for(lambda: not os.listdir(system.queue_dir / "incoming"), 10, "incoming/ to be empty")


def test_limits(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_recipient_limit="2",
                      message_size_limit="2000", smtpd_hard_error_limit="5",
                      smtpd_client_connection_count_limit="2")
    c = Raw(mta.port)
    c.start()
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=2001") == "552 5.3.4 Message size exceeds fixed limit"
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<bob@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<carol@test.example>") == "452 4.5.3 Error: too many recipients"
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n.\r\n") == (
        "552 5.3.4 Message size exceeds fixed limit")
    assert c.cmd("NOOP " + "z" * 5000) == "500 5.5.2 Error: line too long"
    # Two connections per client address; a third is turned away.
    second = Raw(mta.port)
    assert second.reply().startswith("220")
    third = Raw(mta.port)
    assert third.reply() == "421 4.7.0 mx.test.example Error: too many connections from 127.0.0.1"
    # Errors so far: 552, 452, 552, 500; the fifth ends the session.
    assert c.cmd("FOO") == "502 5.5.2 Error: command not recognized"
    assert c.reply() == "421 4.7.0 mx.test.example Error: too many errors"
    assert c.at_eof()
    assert mta.queue_ids("incoming") == []


def test_timeout_and_queue_minfree(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_timeout="1",
                      queue_minfree=str(10**17))
    c = Raw(mta.port)
    c.start()
    assert c.cmd("MAIL FROM:<a@example.org>") == "452 4.3.1 Insufficient system storage"
    assert c.reply() == "421 4.4.2 mx.test.example Error: timeout exceeded"
    mta.wait_log(r"timeout after MAIL from localhost\[127\.0\.0\.1\]")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=mx.test.example"],
                   check=True, capture_output=True, timeout=30)
    os.chmod(base, 0o755)
    os.chmod(key, 0o644)     # the test tree is throw-away; smtpd reads it before dropping root
    return str(cert), str(key)


def test_starttls_and_injection(mta_factory: Any, certificate: tuple[str, str]) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_tls_cert_file=certificate[0],
                      smtpd_tls_key_file=certificate[1])
    c = Raw(mta.port)
    c.start()
    c.sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    c.sock = context.wrap_socket(c.sock)
    assert c.cmd("RCPT TO:<alice@test.example>") == "503 5.5.1 Error: need MAIL command"
    assert "250-STARTTLS" not in c.cmd("EHLO client.example").split("\n")
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    queue_id = queue_id_of(c.cmd(b"Subject: tls\r\n\r\nsecret\r\n.\r\n"))
    env, content = wait_queued(mta, 1)[queue_id]
    assert env.attrs.get("protocol") == "ESMTPS"
    assert body_of(content) == b"secret\n"
    mta.wait_log(r"Anonymous TLS connection established from localhost\[127\.0\.0\.1\]: TLSv1\.[23]")


def test_smtplib_starttls(mta_factory: Any, certificate: tuple[str, str]) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_tls_cert_file=certificate[0],
                      smtpd_tls_key_file=certificate[1], smtpd_tls_security_level="encrypt")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as s:
        s.ehlo()
        assert s.mail("a@example.org") == (530, b"5.7.0 Must issue a STARTTLS command first")
        s.starttls(context=context)
        s.sendmail("a@example.org", ["bob@test.example"], b"Subject: x\r\n\r\nover tls\r\n")
    (env, content), = wait_queued(mta, 1).values()
    assert body_of(content) == b"over tls\n"


def test_unknown_user_with_default_local_recipient_maps(mta_factory: Any, tmp_path: Path) -> None:
    """local_recipient_maps = unix:passwd.byname $alias_maps, with the aliases built."""
    params = {k: v for k, v in PARAMS.items() if k != "local_recipient_maps"}
    mta = mta_factory(master_cf=MASTER_CF, start=False, **params)
    (mta.config_dir / "aliases").write_text("postmaster: root\nstaff: root\n")
    built = mta.run("postalias", str(mta.config_dir / "aliases"))
    assert built.returncode == 0, built.stderr
    mta.start()
    c = Raw(mta.port)
    c.start()
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<root@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<Staff@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<no-such-user-xyz@test.example>") == (
        "550 5.1.1 <no-such-user-xyz@test.example>: Recipient address rejected: User unknown in "
        "local recipient table")


def test_queue_space_below_one_and_a_half_message_size_limit(mta_factory: Any) -> None:
    """MAIL is refused when the queue file system cannot hold 1.5 x message_size_limit,
    with queue_minfree unset; the log names the refusal."""
    mta = mta_factory(master_cf=MASTER_CF, start=False, **PARAMS)
    st = os.statvfs(mta.base)
    limit = st.f_bavail * st.f_frsize            # 1.5 x this is more than is free
    mta.write_main_cf({**mta.params, "message_size_limit": str(limit)})
    mta.start()
    c = Raw(mta.port)
    c.start()
    assert c.cmd("MAIL FROM:<a@example.org>") == "452 4.3.1 Insufficient system storage"
    mta.wait_log(r"NOQUEUE: reject: MAIL from localhost\[127\.0\.0\.1\]: 452 4\.3\.1 "
                 r"Insufficient system storage")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"


def test_address_literal_of_our_address_is_local(mta_factory: Any) -> None:
    """user@[127.0.0.1] on a system receiving on 127.0.0.1: accepted at RCPT from an
    outside client and delivered by local, not relayed to ourselves; user@[127.0.0.2]
    is someone else's and refused for relay."""
    mta = mta_factory(start=False, mynetworks="127.0.0.2/32")   # the client 127.0.0.1 is outside
    target = mta.base / "mail" / "literal.out"
    mta.write_aliases(f"postmaster: root\nlit: {target}\n")
    mta.start()
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.mail("s@remote.example")[0] == 250
        assert s.rcpt("lit@[127.0.0.1]")[0] == 250
        code, text = s.rcpt("lit@[127.0.0.2]")
        assert (code, text) == (554, b"5.7.1 <lit@[127.0.0.2]>: Relay access denied")
        assert s.data(b"Subject: literal\r\n\r\nto our own address\r\n")[0] == 250
    wait_for(lambda: target.exists() and b"to our own address" in target.read_bytes(), 20,
             "delivery to the alias file")
    mta.wait_log(r"to=<lit@\[127\.0\.0\.1\]>.*relay=local.*status=sent")
    assert "relay=smtp" not in mta.log() and "loops back to myself" not in mta.log()
    verified = mta.run("sendmail", "-bv", "lit@[127.0.0.1]", "x@[127.0.0.2]")
    lines = verified.stdout.splitlines()
    assert lines[0].startswith("lit@[127.0.0.1]... deliverable via local"), verified
    assert lines[1] == "x@[127.0.0.2]... deliverable via smtp to [127.0.0.2]", verified


def test_missing_alias_table_is_named_in_the_log_and_by_check(mta_factory: Any) -> None:
    """alias_maps without its .lmdb: RCPT is a temporary failure, and both the log and
    `postpy check` say which table is missing and why."""
    params = {k: v for k, v in PARAMS.items() if k != "local_recipient_maps"}
    mta = mta_factory(master_cf=MASTER_CF, start=False, **params)
    (mta.config_dir / "aliases.lmdb").unlink()
    spec = f"lmdb:{mta.config_dir}/aliases"
    why = (f"{spec} is unavailable. open database {mta.config_dir}/aliases.lmdb: "
           "No such file or directory")
    checked = mta.run("postpy", "check")
    assert checked.returncode == 0, checked.stderr
    assert f"postpy/postpy-script: warning: alias_database: {why}\n" in checked.stderr
    mta.start()
    c = Raw(mta.port)
    c.start()
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<root@test.example>") == (
        "451 4.3.0 <root@test.example>: Temporary lookup failure")
    mta.wait_log(rf"postpy/smtpd\[\d+\]: warning: {re.escape(why)}\n")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
