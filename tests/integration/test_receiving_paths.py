"""Receiving paths through a started system: header limits, BDAT, bare LF,
and a renewed certificate with a key only root can read.

master.cf holds only smtpd and cleanup (test_smtpd_system's), so accepted
mail stays in ``incoming/`` and each test reads the queue file back with
qfile.  What is checked is what cleanup stored, byte for byte, after its
own ``Received:`` header.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, wait_for
from test_smtpd_system import MASTER_CF, Raw, queue_id_of, wait_queued
from test_smtpd_system import PARAMS as SYSTEM_PARAMS

# No Message-ID/Date/From added for clients in mynetworks: the stored content
# is then exactly what the client sent, after the Received: header.
PARAMS = {**SYSTEM_PARAMS, "local_header_rewrite_clients": ""}


@pytest.fixture
def system(mta_factory: Any) -> Any:
    return mta_factory(master_cf=MASTER_CF, **PARAMS)


def after_received(content: bytes) -> bytes:
    """The stored content without the Received: header cleanup put first."""
    assert content.startswith(b"Received: "), content[:200]
    lines = content.split(b"\n")
    rest = 1
    while lines[rest][:1] in (b"\t", b" "):
        rest += 1
    return b"\n".join(lines[rest:])


def open_transaction(c: Raw, rcpt: str = "alice@test.example") -> None:
    assert c.cmd("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
    assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"


# -- header_count_limit and header_size_limit ------------------------------------------

def test_header_limits_move_extra_headers_to_body_and_cut_long_ones(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, header_count_limit="5",
                      header_size_limit="1000")
    # X-Long: a 14-byte first line and 30 continuation lines of exactly 100 bytes
    # each (LF included).  14 + 9 * 100 = 914 fits in 1000, a tenth would not:
    # the header keeps 9 continuations, cut at a line boundary.
    continuations = [b"\tcontinuation %02d " % i + b"c" * 82 for i in range(30)]
    assert all(len(line) + 1 == 100 for line in continuations)
    # Lines with no place to fold are cut at 1000 bytes: X-Wide reaches cleanup
    # whole, X-Huge (more than smtpd reads at once) in pieces without a line end.
    wide = b"X-Wide: " + b"w" * 5000
    huge = b"X-Huge: " + b"h" * 200_000
    message = (b"Subject: limits\r\n"
               b"X-Long: first\r\n" + b"".join(line + b"\r\n" for line in continuations)
               + wide + b"\r\n" + huge + b"\r\n"
               + b"X-Count-5: 5\r\n"
               + b"X-Count-6: 6\r\nX-Count-7: 7\r\n"      # past the count limit: body
               + b"\r\nthe body\r\n")
    c = Raw(mta.port)
    c.start()
    open_transaction(c)
    assert c.cmd("DATA").startswith("354")
    queue_id = queue_id_of(c.cmd(message + b".\r\n"))
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    _env, content = wait_queued(mta, 1)[queue_id]
    expected = (b"Subject: limits\n"
                b"X-Long: first\n" + b"".join(line + b"\n" for line in continuations[:9])
                + wide[:1000] + b"\n" + huge[:1000] + b"\n"
                + b"X-Count-5: 5\n"
                + b"\n"                                  # the header block ends after 5 headers
                + b"X-Count-6: 6\nX-Count-7: 7\n"
                + b"\nthe body\n")
    assert after_received(content) == expected
    mta.wait_log(rf"warning: {queue_id}: header X-Long exceeds header_size_limit: truncated")
    mta.wait_log(rf"warning: {queue_id}: header X-Wide exceeds header_size_limit: truncated")
    mta.wait_log(rf"warning: {queue_id}: header X-Huge exceeds header_size_limit: truncated")


# -- BDAT (RFC 3030) --------------------------------------------------------------------

def test_bdat_chunks_stored_byte_exactly(system: Any) -> None:
    c = Raw(system.port)
    c.start()
    assert "250 CHUNKING" in c.cmd("EHLO client.example").split("\n")
    open_transaction(c)
    # No dot-stuffing and no end marker in BDAT: ".\r\n" and "..x" are content;
    # a CRLF split between two chunks is still one line end; a bare CR is kept.
    first = b"Subject: chunked\r\n\r\nline one\r\n.\r\n..two dots\r\nsplit crlf\r"
    second = b"\nbare \r cr and 8bit \xe9\xff \x00 nul\r\n"
    big = b"".join(b"big line %06d " % i + b"z" * 60 + b"\r\n" for i in range(4000))  # ~300 KB
    last = b"the end\r\n"
    assert c.cmd(b"BDAT %d\r\n" % len(first) + first) == f"250 2.0.0 Ok: {len(first)} bytes"
    assert c.cmd(b"BDAT %d\r\n" % len(second) + second) == f"250 2.0.0 Ok: {len(second)} bytes"
    assert c.cmd(b"BDAT %d\r\n" % len(big) + big) == f"250 2.0.0 Ok: {len(big)} bytes"
    queue_id = queue_id_of(c.cmd(b"BDAT %d LAST\r\n" % len(last) + last))
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    _env, content = wait_queued(system, 1)[queue_id]
    assert after_received(content) == (first + second + big + last).replace(b"\r\n", b"\n")
    system.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=2 mail=1 rcpt=1 bdat=4 "
                    r"quit=1 commands=9")


def test_bdat_pipelined_with_other_commands(system: Any) -> None:
    c = Raw(system.port)
    c.start()
    one = b"Subject: one\r\n\r\nfirst message\r\n"
    two_a, two_b = b"Subject: two\r\n\r\nsec", b"ond message\r\n"
    # Two transactions, every command and chunk in one write: the replies come
    # back in order, and each message gets exactly its chunks.
    c.sock.sendall(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@test.example>\r\n"
                   + b"RCPT TO:<nobody@test.example>\r\n"
                   + b"BDAT %d LAST\r\n" % len(one) + one
                   + b"NOOP\r\nMAIL FROM:<>\r\nRCPT TO:<bob@test.example>\r\n"
                   + b"BDAT %d\r\n" % len(two_a) + two_a
                   + b"BDAT %d LAST\r\n" % len(two_b) + two_b
                   + b"QUIT\r\n")
    replies = [c.reply() for _ in range(10)]
    first, second = queue_id_of(replies[3]), queue_id_of(replies[8])
    assert replies == [
        "250 2.1.0 Ok", "250 2.1.5 Ok", replies[2], f"250 2.0.0 Ok: queued as {first}",
        "250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok", f"250 2.0.0 Ok: {len(two_a)} bytes",
        f"250 2.0.0 Ok: queued as {second}", "221 2.0.0 Bye"]
    assert replies[2].startswith("550 5.1.1 <nobody@test.example>")
    files = wait_queued(system, 2)
    assert [r.address for r in files[first][0].recipients] == ["alice@test.example"]
    assert [r.address for r in files[second][0].recipients] == ["bob@test.example"]
    assert files[second][0].sender == ""
    assert after_received(files[first][1]) == b"Subject: one\n\nfirst message\n"
    assert after_received(files[second][1]) == b"Subject: two\n\nsecond message\n"


def test_bdat_and_data_in_one_session(system: Any) -> None:
    c = Raw(system.port)
    c.start()
    open_transaction(c)
    chunk = b"Subject: by bdat\r\n\r\nchunked\r\n"
    by_bdat = queue_id_of(c.cmd(b"BDAT %d LAST\r\n" % len(chunk) + chunk))
    open_transaction(c, "carol@test.example")
    assert c.cmd("DATA").startswith("354")
    by_data = queue_id_of(c.cmd(b"Subject: by data\r\n\r\n..stuffed\r\n.\r\n"))
    files = wait_queued(system, 2)
    assert after_received(files[by_bdat][1]) == b"Subject: by bdat\n\nchunked\n"
    assert after_received(files[by_data][1]) == b"Subject: by data\n\n.stuffed\n"


# -- smtpd_forbid_bare_newline ------------------------------------------------------------

BARE_LF_MESSAGE = b"Subject: bare\r\n\r\nline one\nline two\r\n"


def send_data(c: Raw, content: bytes) -> str:
    open_transaction(c)
    assert c.cmd("DATA").startswith("354")
    return c.cmd(content + b".\r\n")


def test_bare_lf_rejected_under_reject_policy(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_forbid_bare_newline="reject")
    # 127.0.0.2 is outside mynetworks (127.0.0.1/32), so not in the default
    # smtpd_forbid_bare_newline_exclusions ($mynetworks).
    c = Raw(mta.port, source="127.0.0.2")
    c.start()
    assert send_data(c, BARE_LF_MESSAGE) == "550 5.5.2 Error: bare <LF> received"
    mta.wait_log(r"postpy/smtpd\[\d+\]: \w+: reject: END-OF-MESSAGE from localhost\[127\.0\.0\.2\]: "
                 r"550 5\.5\.2 Error: bare <LF> received; from=<sender@example\.org> proto=ESMTP "
                 r"helo=<client\.example>")
    # The session goes on, and the aborted handoff left nothing in incoming/.
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    wait_for(lambda: not os.listdir(mta.queue_dir / "incoming"), 10, "incoming/ to be empty")
    # A client in the exclusions ($mynetworks) gets the same message queued.
    trusted = Raw(mta.port)
    trusted.start()
    queue_id = queue_id_of(send_data(trusted, BARE_LF_MESSAGE))
    _env, content = wait_queued(mta, 1)[queue_id]
    assert after_received(content) == b"Subject: bare\n\nline one\nline two\n"


def test_bare_lf_normalized_by_default(system: Any) -> None:
    c = Raw(system.port, source="127.0.0.2")
    c.start()
    queue_id = queue_id_of(send_data(c, BARE_LF_MESSAGE))
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    _env, content = wait_queued(system, 1)[queue_id]
    assert after_received(content) == b"Subject: bare\n\nline one\nline two\n"


# -- a renewed certificate whose key only root can read ------------------------------------

def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    directory.mkdir()
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def fingerprint_of(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def starttls_fingerprint(port: int) -> str:
    """SHA-256 of the certificate smtpd presents after STARTTLS."""
    c = Raw(port)
    c.start()
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(c.sock)
    c.sock = tls
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    assert c.cmd("EHLO client.example").startswith("250-")    # the session really works
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    tls.close()
    return hashlib.sha256(der).hexdigest()


def smtpd_pids(mta: Any) -> set[int]:
    return {pid for pid, args in mta.children().items() if "smtpd" in args}


def real_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def replace_file(source: Path, target: Path, mode: int) -> None:
    """As certbot renews: a new file renamed over the old one."""
    new = target.with_name(target.name + ".new")
    shutil.copyfile(source, new)
    os.chown(new, 0, 0)
    os.chmod(new, mode)
    os.rename(new, target)


@pytest.mark.skipif(not IS_ROOT, reason="a key readable by root only needs root (smtpd drops "
                                        "privileges after reading it)")
def test_renewed_certificate_with_root_only_key_after_reload(mta_factory: Any,
                                                             shared_dir: Path) -> None:
    # shared_dir is reachable by every uid, so the dropped smtpd can stat the
    # files (and sees the change) but cannot read the 0600 key.
    old = make_certificate(shared_dir / "a", "cert-a.test.example")
    new = make_certificate(shared_dir / "b", "cert-b.test.example")
    live = shared_dir / "live"
    live.mkdir()
    os.chmod(live, 0o755)
    cert, key = live / "cert.pem", live / "key.pem"
    replace_file(old[0], cert, 0o644)
    replace_file(old[1], key, 0o600)
    mta = mta_factory(master_cf=MASTER_CF, **PARAMS, smtpd_tls_cert_file=str(cert),
                      smtpd_tls_key_file=str(key))
    assert starttls_fingerprint(mta.port) == fingerprint_of(old[0])
    serving = smtpd_pids(mta)
    assert serving
    assert all(real_uid(pid) != 0 for pid in serving), "smtpd kept root"
    replace_file(new[1], key, 0o600)
    replace_file(new[0], cert, 0o644)
    # The running smtpd cannot read the new key: it keeps the old certificate
    # and says so.
    assert starttls_fingerprint(mta.port) == fingerprint_of(old[0])
    mta.wait_log(r"warning: cannot load certificate .*; still using the certificate loaded before")
    reloads = mta.log().count("reload -- version")
    done = mta.run("postpy", "reload")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: mta.log().count("reload -- version") > reloads, 10, "the reload in the log")
    # Old smtpd processes finish and exit; a new one reads the key as root.
    wait_for(lambda: not (smtpd_pids(mta) & serving), 10, "the old smtpd to exit")
    assert starttls_fingerprint(mta.port) == fingerprint_of(new[0])
    assert fingerprint_of(new[0]) != fingerprint_of(old[0])



# -- sendmail -bs: SMTP on stdin ----------------------------------------------------------------

def test_sendmail_bs_reads_the_whole_message_when_the_maildrop_fails(mta_factory: Any) -> None:
    mta = mta_factory(master_cf=MASTER_CF, start=False, **PARAMS)
    assert not (mta.queue_dir / "maildrop").exists()      # never started: no queue tree
    session = (b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice>\r\n"
               b"DATA\r\nSubject: x\r\n\r\nRSET\r\nNOOP\r\n.\r\nQUIT\r\n")
    done = mta.run("sendmail", "-bs", input=session, timeout=20)
    codes = [line[:3] for line in done.stdout.splitlines() if line[3:4] != "-"]
    # Once 354 is sent, the content up to "." is the message, whatever the outcome.
    assert codes == ["220", "250", "250", "250", "354", "451", "221"], done.stdout
