"""sendmail as a real program against a real master (pickup, cleanup, showq).

master.cf has no qmgr, so each submitted message stays in incoming/
where the test reads its envelope and content.  Exit codes that need no
mail system run against a stopped tree.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, IS_ROOT, wait_for

from postpy.queue import qfile

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  -       -       n       -       0       cleanup
showq     unix  n       -       n       -       -       showq
local     unix  -       n       n       -       -       local
smtp      unix  -       -       n       -       -       smtp
"""
UID = os.getuid()


@pytest.fixture
def system(mta_factory):
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def sendmail(mta, *args: str, input: bytes = b"Subject: test\n\nbody\n", program: str = "sendmail",
             env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    full_env = mta.env()
    full_env.update(env or {})
    return subprocess.run([str(BIN / program), *args], input=input, capture_output=True,
                          env=full_env, timeout=timeout)


def queued_with(mta, recipient: str, timeout: float = 20) -> tuple[qfile.Envelope, bytes]:
    """The queued message that has ``recipient`` (waits for it)."""
    def find() -> tuple[qfile.Envelope, bytes] | None:
        for qid in mta.queue_ids("incoming"):
            try:
                env, data = qfile.read_all(str(mta.queue_dir / "incoming" / qid))
            except (FileNotFoundError, qfile.CorruptQueueFile):
                continue
            if any(r.address == recipient for r in env.recipients):
                return env, data
        return None

    found = wait_for(find, timeout, f"a queued message for {recipient}")
    assert isinstance(found, tuple)
    return found


def test_submission_is_queued_and_attributed_to_the_uid(system):
    mta = system
    result = sendmail(mta, "bob@example.net", input=b"Subject: hello\n\nworld\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"" and result.stderr == b""
    env, data = queued_with(mta, "bob@example.net")
    mta.wait_log(rf"postpy/pickup\[\d+\]: {env.queue_id}: uid={UID} from=<\w+>")
    assert env.sender.endswith("@mx.test.example")          # unqualified: cleanup added myorigin
    assert b"\nSubject: hello\n" in data and data.endswith(b"\n\nworld\n")
    assert f"from userid {UID}".encode() in data


def test_cron_style_pipe_into_sendmail_t(system):
    mta = system
    script = (f"printf 'To: cron@example.net\\nCc: Carol <carol@example.net>\\nBcc: secret@example.net\\n"
              f"Subject: cron job\\n\\noutput\\n' | {BIN}/sendmail -t")
    env = {"PATH": "/usr/bin:/bin", "MAIL_CONFIG": str(mta.config_dir), "HOME": "/", "SHELL": "/bin/sh"}
    result = subprocess.run(["sh", "-c", script], stdin=subprocess.DEVNULL, capture_output=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    env_, data = queued_with(mta, "cron@example.net")
    assert sorted(r.address for r in env_.recipients) == [
        "carol@example.net", "cron@example.net", "secret@example.net"]
    assert b"Bcc:" not in data and b"secret@example.net" not in data.split(b"\n\n", 1)[0].split(b"Received:")[-1]
    assert b"Subject: cron job\n" in data


def test_t_adds_argument_recipients(system):
    mta = system
    result = sendmail(mta, "-t", "extra@example.net", input=b"To: header@example.net\n\nx\n")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "extra@example.net")
    assert sorted(r.address for r in env.recipients) == ["extra@example.net", "header@example.net"]


def test_t_with_notify_queues_each_recipient_once(system):
    mta = system
    result = sendmail(mta, "-t", "-N", "success", "arg@example.net",
                      input=b"To: dup@example.net\n\nx\n")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "dup@example.net")
    assert sorted((r.address, r.notify) for r in env.recipients) == [
        ("arg@example.net", "SUCCESS"), ("dup@example.net", "SUCCESS")]


def test_t_with_notify_and_an_argument_also_in_the_header(system):
    mta = system
    result = sendmail(mta, "-t", "-N", "success", "both@example.net",
                      input=b"To: both@example.net\n\nx\n")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "both@example.net")
    assert [(r.address, r.notify) for r in env.recipients] == [("both@example.net", "SUCCESS")]


def test_address_literal_recipients_are_all_queued(system):
    mta = system
    result = sendmail(mta, "bench", "a@[127.0.0.2]", "Ann <c@[IPv6:2001:db8::1]>")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "a@[127.0.0.2]")
    assert sorted(r.address for r in env.recipients) == [
        "a@[127.0.0.2]", "bench@mx.test.example", "c@[IPv6:2001:db8::1]"]
    result = sendmail(mta, "alone@[127.0.0.3]")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "alone@[127.0.0.3]")
    assert [r.address for r in env.recipients] == ["alone@[127.0.0.3]"]


def test_t_keeps_address_literal_recipients(system):
    mta = system
    result = sendmail(mta, "-t", input=b"To: x, b@[127.0.0.2]\nCc: team: \"odd name\"@example.net;\n\nx\n")
    assert result.returncode == 0, result.stderr
    env, _ = queued_with(mta, "b@[127.0.0.2]")
    assert sorted(r.address for r in env.recipients) == [
        '"odd name"@example.net', "b@[127.0.0.2]", "x@mx.test.example"]


def test_local_submission_headers_are_qualified(system):
    mta = system
    message = (b"From: root (Cron Daemon)\nTo: qual@example.net\n"
               b"Cc: bench2 (second), \"Ann\" <bench2>\nReply-To: root\n"
               b"Subject: root\n\nbody mentions root\n")
    result = sendmail(mta, "-t", input=message)
    assert result.returncode == 0, result.stderr
    _, data = queued_with(mta, "qual@example.net")
    header, _, body = data.partition(b"\n\n")
    lines = header.split(b"\n")
    assert b"From: root@mx.test.example (Cron Daemon)" in lines
    assert b'Cc: bench2@mx.test.example (second), "Ann" <bench2@mx.test.example>' in lines
    assert b"Reply-To: root@mx.test.example" in lines
    assert b"Subject: root" in lines and body == b"body mentions root\n"


# rows: arguments, input, check(envelope, content); each row has its own recipient
SUBMIT_ROWS = [
    (["-f", "alice@example.org"], b"x\n", lambda e, d: e.sender == "alice@example.org"),
    (["-r", "rob"], b"x\n", lambda e, d: e.sender == "rob@mx.test.example"),
    (["-f", "<>"], b"x\n", lambda e, d: e.sender == ""),
    (["-f", ""], b"x\n", lambda e, d: e.sender == ""),
    (["-F", "Alice Example"], b"Subject: s\n\nb\n",
     lambda e, d: re.search(rb"\nFrom: Alice Example <\w+@mx\.test\.example>\n", d) is not None),
    (["-N", "success,failure"], b"x\n", lambda e, d: e.recipients[0].notify == "SUCCESS,FAILURE"),
    (["-N", "never"], b"x\n", lambda e, d: e.recipients[0].notify == "NEVER"),
    (["-R", "hdrs"], b"x\n", lambda e, d: e.attrs.get("ret") == "HDRS"),
    (["-V", "my-envid"], b"x\n", lambda e, d: e.attrs.get("envid") == "my-envid"),
    (["-B", "8BITMIME"], b"x\n", lambda e, d: e.attrs.get("body") == "8BITMIME"),
    (["-bm"], b"x\n", lambda e, d: True),
    (["-i"], b"a\n.\nb\n", lambda e, d: d.endswith(b"\na\n.\nb\n")),
    (["-oi"], b"a\n.\nb\n", lambda e, d: d.endswith(b"\na\n.\nb\n")),
    ([], b"a\n.\nb\n", lambda e, d: d.endswith(b"\na\n")),
    ([], b"a\r\nb\r\n", lambda e, d: d.endswith(b"\na\nb\n")),
    ([], b"no final newline", lambda e, d: d.endswith(b"\nno final newline\n")),
    ([], b"From someone Mon Aug 25 10:11:12 2025\nSubject: mbox\n\nx\n",
     lambda e, d: b"From someone" not in d and b"Subject: mbox\n" in d),
    ([], b"Subject: 8bit\n\n\xe9t\xe9 \xff\x00\n", lambda e, d: d.endswith(b"\xe9t\xe9 \xff\x00\n")),
    (["-Am", "-Ac", "-L", "label", "-U", "-h", "10", "-m", "-o7", "-o8", "-om", "-c", "-e", "x",
      "-p", "smtp", "-x", "-G", "-oeq", "-O", "DeliveryMode=b", "-Xlog", "-v", "-C"], b"x\n", lambda e, d: True),
    (["-N", "bogus"], b"x\n", lambda e, d: e.recipients[0].notify == ""),     # warns only
    (["--"], b"x\n", lambda e, d: True),
]


@pytest.mark.parametrize("row", range(len(SUBMIT_ROWS)))
def test_submission_flags(system, row):
    mta = system
    args, data, check = SUBMIT_ROWS[row]
    if args and args[-1] == "-C":
        args = [*args, str(mta.config_dir)]
    rcpt = f"row{row}@example.net"
    result = sendmail(mta, *args, rcpt, input=data)
    assert result.returncode == 0, result.stderr
    if "bogus" in args:
        assert b"sendmail: warning: bad -N option value" in result.stderr
    else:
        assert result.stderr == b""
    env, content = queued_with(mta, rcpt)
    assert check(env, content), (env, content[-300:])


def test_large_message_streams(system):
    mta = system
    line = b"0123456789" * 9 + b"abcdefghi\r\n"          # 101 bytes with CRLF
    body = line * 100_000                                # about 10 MB
    result = sendmail(mta, "big@example.net", input=b"Subject: big\r\n\r\n" + body, timeout=120)
    assert result.returncode == 0, result.stderr
    env, data = queued_with(mta, "big@example.net", timeout=60)
    assert data.endswith(body.replace(b"\r\n", b"\n"))


def test_submission_while_stopped_waits_in_maildrop(system):
    mta = system
    mta.stop()
    result = sendmail(mta, "later@example.net", input=b"Subject: while down\n\nqueued later\n")
    assert result.returncode == 0, result.stderr
    assert len(mta.queue_ids("maildrop")) == 1
    assert mta.queue_ids("incoming") == []
    mta.start()
    env, data = queued_with(mta, "later@example.net")
    assert data.endswith(b"queued later\n")
    wait_for(lambda: mta.queue_ids("maildrop") == [], 10, "maildrop to empty")


# -- exit codes that need no running system ----------------------------------------------

ERROR_ROWS = [
    # arguments, input, exit code, stderr pattern
    ([], b"x\n", 64, r"sendmail: fatal: no recipient addresses"),
    (["-t"], b"Subject: nobody\n\nx\n", 65, r"No recipient addresses found in message header"),
    (["-n", "x"], b"", 64, r"-n option not supported"),
    (["-f", "a\nb", "x"], b"x\n", 65, r"header injection"),
    (["-f", "a\rb", "x"], b"x\n", 65, r"header injection"),
    (["-F", "Evil\nBcc: victim", "x"], b"x\n", 65, r"header injection"),
    (["-f", "a\tb", "x"], b"x\n", 65, r"bad sender address"),
    (["-B", "BINARYMIME", "x"], b"", 64, r"-B option needs 8BITMIME or 7BIT"),
    (["-R", "some", "x"], b"", 64, r"-R option needs FULL or HDRS"),
    (["-bz"], b"", 64, r"unsupported: -bz"),
    (["-Z"], b"", 64, r"invalid option"),
    (["-f"], b"", 64, r"option requires an argument"),
    (["-bd"], b"", 64, r"postpy start"),
    (["-bl"], b"", 64, r"postpy start"),
    (["-qS"], b"", 64, r"-qS is not implemented"),
    (["-qR"], b"", 64, r"-qR requires a site"),
    (["-bp", "x"], b"", 64, r"requires no recipient"),
    (["-bi", "x"], b"", 64, r"requires no recipient"),
    (["-bs", "x"], b"", 64, r"requires no recipient"),
    (["-q", "x"], b"", 64, r"requires no recipient"),
    (["-oA", "-bi"], b"", 64, r"-oA requires pathname"),
    (["-bv", "-t", "x"], b"", 64, r"-bv cannot be used"),
    (["-bv", "-N", "never", "x"], b"", 64, r"-bv cannot be used"),
    (["-bv"], b"", 64, r"-bv needs recipient"),
    (["a@[127.0.0.300]"], b"x\n", 64, r"bad recipient address syntax: 'a@\[127\.0\.0\.300\]'"),
    (["ok@example.net", "a@b c@d"], b"x\n", 64, r"bad recipient address syntax: 'a@b c@d'"),
    ([""], b"x\n", 64, r"no recipient address in argument ''"),
    (["-t"], b"To: a@example.net, b@[1.2.3]\n\nx\n", 65,
     r"bad address syntax in header To: 'a@example\.net, b@\[1\.2\.3\]'"),
    (["-bv", "(unterminated"], b"", 64, r"bad recipient address syntax: '\(unterminated'"),
    (["-XV", "-f", "<>", "x"], b"x\n", 64, r"non-null sender"),
    (["-bh"], b"", 0, r"^$"),
    (["-bH"], b"", 0, r"^$"),
    (["-q30m"], b"", 0, r"^$"),
    (["-q"], b"", 69, r"Cannot flush mail queue - mail system is down"),
]


@pytest.fixture
def stopped(mta_factory):
    """A configured, never started system (its queue tree made as `postpy check` would)."""
    mta = mta_factory(master_cf=MASTER_CF, start=False)
    subprocess.run([str(BIN / "postpy"), "check"], env=mta.env(), capture_output=True, timeout=60)
    return mta


@pytest.mark.parametrize("args, data, status, pattern", ERROR_ROWS)
def test_exit_codes(stopped, args, data, status, pattern):
    result = sendmail(stopped, *args, input=data)
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert re.search(pattern, stderr), stderr
    assert len(stderr.splitlines()) <= 1                     # one line per problem
    assert stopped.queue_ids("maildrop") == []


def test_queue_write_failure_is_tempfail(stopped):
    (stopped.config_dir / "main.cf").write_text(
        (stopped.config_dir / "main.cf").read_text() + f"queue_directory = {stopped.base}/nonexistent\n")
    result = sendmail(stopped, "x@example.net")
    assert result.returncode == 75
    assert re.fullmatch(r"sendmail: fatal: \w+\(\d+\): cannot create file in .*\n", result.stderr.decode())


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_submit_acl(stopped):
    with open(stopped.config_dir / "main.cf", "a") as fh:
        fh.write("authorized_submit_users = !root, static:anyone\n")
    result = sendmail(stopped, "x@example.net")
    assert result.returncode == 77
    assert "User root(0) is not allowed to submit mail" in result.stderr.decode()


def test_bi_rebuilds_aliases(stopped):
    result = sendmail(stopped, "-bi")
    assert result.returncode == 0, result.stderr
    assert Path(f"{stopped.config_dir}/aliases.lmdb").exists()
    result = sendmail(stopped, "-I", f"-oA{stopped.base}/other")
    assert result.returncode != 0 and b"other" in result.stderr         # missing source file


def test_newaliases_and_mailq_names(stopped):
    (stopped.config_dir / "aliases").write_text("postmaster: root\nabuse: root\n")
    result = sendmail(stopped, program="newaliases")
    assert result.returncode == 0, result.stderr
    assert Path(f"{stopped.config_dir}/aliases.lmdb").exists()
    result = sendmail(stopped, program="mailq")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Mail queue is empty\n"
    assert b"Mail system is down -- accessing queue directly" in result.stderr


def test_bv_reports_routes(stopped):
    with open(stopped.config_dir / "main.cf", "a") as fh:
        fh.write("transport_maps = inline:{{bounce.example=error:5.1.2 no such domain}}\n")
    assert sendmail(stopped, "-bi").returncode == 0           # local_recipient_maps has alias_maps
    result = sendmail(stopped, "-bv", "root", "nosuchuser@mx.test.example", "bob@example.org",
                      "x@bounce.example")
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "root... deliverable via local to mx.test.example"
    assert lines[1].startswith("nosuchuser@mx.test.example... undeliverable: 5.1.1 User unknown")
    assert lines[2] == "bob@example.org... deliverable via smtp to example.org"
    assert lines[3] == "x@bounce.example... undeliverable: 5.1.2 no such domain"
    assert result.returncode == 67


def test_bv_reports_address_literals(stopped):
    result = sendmail(stopped, "-bv", "a@[127.0.0.2]", "Ann <root>")
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2, (result.stdout, result.stderr)
    assert lines[0].startswith("a@[127.0.0.2]... deliverable via ")
    assert lines[1].startswith("root... ")


def test_default_system_takes_the_message_to_qmgr(mta):
    """With the shipped master.cf: sendmail -> pickup -> cleanup -> qmgr, and mailq works."""
    result = sendmail(mta, "-t", input=b"To: someone@example.net\nSubject: full path\n\nhi\n")
    assert result.returncode == 0, result.stderr
    match = mta.wait_log(rf"postpy/pickup\[\d+\]: (\w+): uid={UID} from=<\w+>")
    queue_id = match.group(1)
    mta.wait_log(rf"postpy/qmgr\[\d+\]: {queue_id}: from=<\w+@mx\.test\.example>, size=\d+, nrcpt=1 "
                 r"\(queue active\)", timeout=20)
    listing = sendmail(mta, program="mailq")
    assert listing.returncode == 0 and listing.stderr == b"", listing.stderr
