"""postcat as a command: readable queue files, section selection, errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postpy.queue.qfile import (
    BOUNCED,
    DONE,
    SUCCESS,
    Envelope,
    LogEntry,
    Recipient,
    append_log,
    read_envelope,
    set_status,
    write_queue_file,
)
from postpy.queue.qid import new_queue_id

BIN = Path(sys.executable).parent
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
ARRIVAL = 1756030272.5
HEADER = b"Received: from client.example (client.example [192.0.2.5])\n\tby mx.example.org\nSubject: test\n"
BODY = b"first body line\n\nafter an empty line\n"
CONTENT = HEADER + b"\n" + BODY


class Tree:
    def __init__(self, base: Path) -> None:
        self.config_dir = base / "etc"
        self.queue_dir = base / "spool"
        self.config_dir.mkdir()
        (self.config_dir / "main.cf").write_text(f"queue_directory = {self.queue_dir}\n")
        for queue in QUEUES:
            (self.queue_dir / queue).mkdir(parents=True)

    def add(self, queue: str = "deferred", content: bytes = CONTENT, env: Envelope | None = None) -> str:
        queue_id = new_queue_id()
        write_queue_file(str(self.queue_dir / queue), queue_id, env or envelope(), content, durable=False)
        return queue_id

    def path(self, queue: str, queue_id: str) -> str:
        return str(self.queue_dir / queue / queue_id)


def envelope() -> Envelope:
    return Envelope(
        sender="alice@example.org",
        recipients=[Recipient("bob@example.net", "Bob@example.net", "rfc822;bob@example.net", "SUCCESS,FAILURE"),
                    Recipient("carol@example.com"), Recipient("dave@example.com"), Recipient("erin@example.com")],
        arrival=ARRIVAL,
        attrs={"client_name": "client.example", "client_addr": "192.0.2.5", "helo": "evil\x1b[31m"},
    )


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def run(*args: str, env_config: str | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    env["TZ"] = "UTC"
    if env_config is not None:
        env["MAIL_CONFIG"] = env_config
    return subprocess.run([str(BIN / "postcat"), *args], capture_output=True, env=env, timeout=60, input=stdin)


def ctime_utc(t: float) -> str:
    return time.asctime(time.gmtime(t))


def expected_full(name: str, recipient_lines: list[str], log_lines: list[str]) -> bytes:
    head = [
        f"*** ENVELOPE RECORDS {name} ***",
        f"message_size: {len(CONTENT)}",
        f"message_arrival_time: {ctime_utc(ARRIVAL)}",
        "sender: alice@example.org",
        "client_name: client.example",
        "client_addr: 192.0.2.5",
        "helo: evil\\x1b[31m",
        "original_recipient: Bob@example.net",
        "dsn_orig_rcpt: rfc822;bob@example.net",
        "dsn_notify: SUCCESS,FAILURE",
        *recipient_lines,
        f"*** MESSAGE CONTENTS {name} ***",
    ]
    tail = [f"*** HEADER EXTRACTED {name} ***", *log_lines, f"*** MESSAGE FILE END {name} ***"]
    return ("\n".join(head) + "\n").encode() + CONTENT + ("\n".join(tail) + "\n").encode()


PENDING_LINES = ["recipient: bob@example.net", "recipient: carol@example.com",
                 "recipient: dave@example.com", "recipient: erin@example.com"]


def test_queue_id_full_output(tree: Tree) -> None:
    queue_id = tree.add()
    result = run("-c", str(tree.config_dir), "-q", queue_id)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout == expected_full(f"deferred/{queue_id}", PENDING_LINES, [])


def test_status_and_log_records(tree: Tree) -> None:
    queue_id = tree.add("active")
    path = tree.path("active", queue_id)
    env = read_envelope(path)
    set_status(path, [env.recipients[0]], DONE)
    set_status(path, [env.recipients[1]], BOUNCED)
    set_status(path, [env.recipients[2]], SUCCESS)
    append_log(path, [LogEntry(1, "failed", "5.1.1", "550 5.1.1 no such user"),
                      LogEntry(0, "delivered", "2.0.0", "250 ok")])
    with open(path, "ab") as fh:
        fh.write(b"L3\tdelay")                                       # torn: not shown
    result = run("-c", str(tree.config_dir), "-q", queue_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_full(
        f"active/{queue_id}",
        ["done_recipient: bob@example.net", "bounced_recipient: carol@example.com",
         "success_recipient: dave@example.com", "recipient: erin@example.com"],
        ["log_record: to=<carol@example.com>, action=failed, dsn=5.1.1 (550 5.1.1 no such user)",
         "log_record: to=<bob@example.net>, action=delivered, dsn=2.0.0 (250 ok)"])


@pytest.mark.parametrize("queue", QUEUES)
def test_search_every_queue(tree: Tree, queue: str) -> None:
    queue_id = tree.add(queue)
    result = run("-c", str(tree.config_dir), "-e", "-q", queue_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"*** ENVELOPE RECORDS {queue}/{queue_id} ***\n".encode())


def test_several_ids(tree: Tree) -> None:
    first, second = tree.add("incoming"), tree.add("hold")
    result = run("-c", str(tree.config_dir), "-e", "-q", first, second)
    banners = [line for line in result.stdout.splitlines() if line.startswith(b"*** ENVELOPE")]
    assert banners == [f"*** ENVELOPE RECORDS incoming/{first} ***".encode(),
                       f"*** ENVELOPE RECORDS hold/{second} ***".encode()]


def test_file_argument_and_environment_config(tree: Tree) -> None:
    queue_id = tree.add()
    path = tree.path("deferred", queue_id)
    result = run(path)
    assert result.returncode == 0 and result.stdout == expected_full(path, PENDING_LINES, [])
    via_env = run("-q", queue_id, env_config=str(tree.config_dir))
    assert via_env.returncode == 0 and f"deferred/{queue_id}".encode() in via_env.stdout


def test_stdin(tree: Tree) -> None:
    queue_id = tree.add()
    data = Path(tree.path("deferred", queue_id)).read_bytes()
    result = run(stdin=data)
    assert result.returncode == 0 and result.stdout == expected_full("stdin", PENDING_LINES, [])


@pytest.mark.parametrize("flags, expected", [
    (["-h"], HEADER),
    (["-b"], BODY),
    (["-bh"], CONTENT),
    (["-h", "-b"], CONTENT),
])
def test_content_sections_are_bare(tree: Tree, flags: list[str], expected: bytes) -> None:
    queue_id = tree.add()
    result = run("-c", str(tree.config_dir), *flags, "-q", queue_id)
    assert result.returncode == 0 and result.stdout == expected


def test_envelope_only(tree: Tree) -> None:
    queue_id = tree.add()
    lines = run("-c", str(tree.config_dir), "-e", "-q", queue_id).stdout.decode().splitlines()
    assert lines[0] == f"*** ENVELOPE RECORDS deferred/{queue_id} ***"
    assert "recipient: erin@example.com" in lines
    assert not any("MESSAGE CONTENTS" in line or "Subject:" in line for line in lines)
    assert lines[-1] == f"*** MESSAGE FILE END deferred/{queue_id} ***"


def test_envelope_and_header(tree: Tree) -> None:
    queue_id = tree.add()
    out = run("-c", str(tree.config_dir), "-eh", "-q", queue_id).stdout
    assert f"*** MESSAGE CONTENTS deferred/{queue_id} ***\n".encode() + HEADER + b"*** HEADER EXTRACTED" in out
    assert BODY not in out


@pytest.mark.parametrize("content, header, body", [
    (b"", b"", b""),
    (b"Subject: no body", b"Subject: no body\n", b""),
    (b"\nbody only\n", b"", b"body only\n"),
    (b"A: b\n\n", b"A: b\n", b""),
    (b"A: b\n\nno newline at end", b"A: b\n", b"no newline at end\n"),
])
def test_odd_content_shapes(tree: Tree, content: bytes, header: bytes, body: bytes) -> None:
    queue_id = tree.add(content=content)
    assert run("-c", str(tree.config_dir), "-h", "-q", queue_id).stdout == header
    assert run("-c", str(tree.config_dir), "-b", "-q", queue_id).stdout == body
    full = run("-c", str(tree.config_dir), "-q", queue_id).stdout
    assert f"*** HEADER EXTRACTED deferred/{queue_id} ***".encode() in full
    assert full.index(b"*** HEADER EXTRACTED") > full.index(b"*** MESSAGE CONTENTS")


def test_not_found(tree: Tree) -> None:
    result = run("-c", str(tree.config_dir), "-q", "5BRW1D3Hqpz2S3")
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr == b"postcat: fatal: open queue file 5BRW1D3Hqpz2S3: No such file or directory\n"


@pytest.mark.parametrize("queue_id", ["../etc/passwd", ".hidden", "a/b"])
def test_refuses_paths_as_queue_ids(tree: Tree, queue_id: str) -> None:
    result = run("-c", str(tree.config_dir), "-q", queue_id)
    assert result.returncode == 1 and result.stderr.startswith(b"postcat: fatal: invalid queue ID")


def test_missing_file_argument(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr == f"postcat: fatal: open {tmp_path}/nope: No such file or directory\n".encode()


@pytest.mark.parametrize("cut", [0, 5, 40, -30, -1])
def test_truncated_file(tree: Tree, cut: int) -> None:
    queue_id = tree.add()
    path = Path(tree.path("deferred", queue_id))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    result = run("-c", str(tree.config_dir), "-q", queue_id)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.startswith(f"postcat: fatal: {path}: ".encode())
    assert result.stderr.count(b"\n") == 1
    by_path = run(str(path))
    assert by_path.returncode == 1 and by_path.stderr.startswith(f"postcat: fatal: {path}: ".encode())


def test_garbled_file(tree: Tree) -> None:
    queue_id = tree.add()
    path = Path(tree.path("deferred", queue_id))
    path.write_bytes(path.read_bytes().replace(b"\nSalice", b"\nXalice", 1))
    result = run(str(path))
    assert result.returncode == 1
    assert result.stderr == f"postcat: fatal: {path}: unknown record type b'X'\n".encode()


def test_not_a_queue_file(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("hello\n")
    result = run(str(tmp_path / "text"))
    assert result.returncode == 1
    assert result.stderr == f"postcat: fatal: {tmp_path}/text: bad magic (not a queue file)\n".encode()


@pytest.mark.parametrize("args", [["-z"], ["-q"], ["-c"]])
def test_usage(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 64
    assert result.stderr.startswith(b"postcat: fatal: ") and b"usage: postcat" in result.stderr


def test_bad_config(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("oops\n")
    result = run("-c", str(tmp_path), "-q", "X")
    assert result.returncode == 1
    assert result.stderr == f"postcat: fatal: {tmp_path}/main.cf, line 1: missing '=' after attribute name: \"oops\"\n".encode()
