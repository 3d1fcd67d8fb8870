"""The queue listing: mailq text and postqueue -j JSON against COMPAT.md's
templates, and the scan of a real queue tree."""

from __future__ import annotations

import calendar
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postpy.mail import queue_listing as ql
from postpy.mail.queue_listing import Entry, ListedRecipient
from postpy.queue import maildrop, qfile


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


REFUSED = "connect to mx.example.com[192.0.2.10]:25: Connection refused"

EXAMPLE = [
    Entry("active", "8E4C92A0F3", at("2025-08-25 10:11:12"), 2143, "alice@example.org",
          [ListedRecipient("bob@example.net")]),
    Entry("deferred", "A1B2C3D4E5", at("2025-08-24 10:11:12"), 5120, "root@host.example",
          [ListedRecipient("carol@example.com", REFUSED), ListedRecipient("dave@example.com", REFUSED)]),
    Entry("hold", "0F9E8D7C6B", at("2025-08-25 08:53:20"), 812, "",
          [ListedRecipient("postmaster@example.org")]),
]

# COMPAT.md section 2, short IDs; "|" marks the end of each line.
SHORT_TEMPLATE = """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------|
8E4C92A0F3*    2143 Mon Aug 25 10:11:12  alice@example.org|
                                         bob@example.net|
|
A1B2C3D4E5     5120 Sun Aug 24 10:11:12  root@host.example|
                (connect to mx.example.com[192.0.2.10]:25: Connection refused)|
                                         carol@example.com|
                                         dave@example.com|
|
0F9E8D7C6B!     812 Mon Aug 25 08:53:20  MAILER-DAEMON|
                                         postmaster@example.org|
|
-- 7 Kbytes in 3 Requests.|
"""

# COMPAT.md section 2, long IDs.
LONG_TEMPLATE = """\
----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------|
4cBfXL5Jc8z2FqG*      2143 Mon Aug 25 10:11:12 alice@example.org|
                                               bob@example.net|
|
-- 2 Kbytes in 1 Request.|
"""


def lines_of(template: str) -> list[str]:
    return [line.removesuffix("|") for line in template.splitlines()]


def test_short_format_matches_template(utc: None) -> None:
    text = "".join(ql.format_text(EXAMPLE, ql.SHORT))
    assert text.splitlines() == lines_of(SHORT_TEMPLATE)
    assert text.endswith("Requests.\n")


def test_long_format_matches_template(utc: None) -> None:
    entry = Entry("active", "4cBfXL5Jc8z2FqG", at("2025-08-25 10:11:12"), 2143,
                  "alice@example.org", [ListedRecipient("bob@example.net")])
    assert "".join(ql.format_text([entry])).splitlines() == lines_of(LONG_TEMPLATE)


def test_columns() -> None:
    short = "".join(ql.format_text(EXAMPLE, ql.SHORT)).splitlines()
    assert short[2].index("bob@") == 41                 # column 42
    long_ = "".join(ql.format_text(EXAMPLE)).splitlines()
    assert long_[2].index("bob@") == 47                 # column 48
    reason = next(line for line in long_ if line.lstrip().startswith("("))
    assert len(reason) == 78                            # padded to 76 - len(reason)


def test_empty_queue() -> None:
    assert "".join(ql.format_text([])) == "Mail queue is empty\n"


@pytest.mark.parametrize("sizes, trailer", [
    ([1023], "-- 0 Kbytes in 1 Request."),
    ([1024], "-- 1 Kbytes in 1 Request."),
    ([1000, 1000], "-- 1 Kbytes in 2 Requests."),
    ([2048] * 5, "-- 10 Kbytes in 5 Requests."),
])
def test_trailer(sizes: list[int], trailer: str) -> None:
    entries = [Entry("deferred", f"ID{i}", 0, s, "a", [ListedRecipient("b")]) for i, s in enumerate(sizes)]
    assert "".join(ql.format_text(entries)).splitlines()[-1] == trailer


def test_reason_lines_only_when_they_change(utc: None) -> None:
    entry = Entry("deferred", "X1", 0, 10, "s", [
        ListedRecipient("a", "r1"), ListedRecipient("b", "r1"), ListedRecipient("c", "r2"),
        ListedRecipient("d", ""), ListedRecipient("e", "")])
    body = [line.strip() for line in ql.format_entry(entry).splitlines()[1:]]
    assert body == ["(r1)", "a", "b", "(r2)", "c", "(reason unavailable)", "d", "e"]


def test_status_marks() -> None:
    def first(queue: str, expire: bool = False) -> str:
        entry = Entry(queue, "QID", 0, 1, "s", [ListedRecipient("r")], forced_expire=expire)
        return ql.format_entry(entry).split()[0]

    assert [first(q) for q in ("maildrop", "incoming", "active", "deferred", "hold")] == \
        ["QID", "QID", "QID*", "QID", "QID!"]
    assert first("active", True) == "QID*#"


def test_json_matches_postqueue_example() -> None:
    expected = ('{"queue_name": "deferred", "queue_id": "A1B2C3D4E5", "arrival_time": 1756030272, '
                '"message_size": 5120, "forced_expire": false, "sender": "root@host.example", '
                '"recipients": [{"address": "carol@example.com", "delay_reason": '
                '"connect to mx.example.com[192.0.2.10]:25: Connection refused"}]}')
    entry = Entry("deferred", "A1B2C3D4E5", 1756030272, 5120, "root@host.example",
                  [ListedRecipient("carol@example.com", REFUSED)])
    assert ql.to_json(entry) == expected
    assert list(json.loads(expected)) == ["queue_name", "queue_id", "arrival_time", "message_size",
                                          "forced_expire", "sender", "recipients"]
    assert ql.from_json(expected) == entry


def test_json_round_trip_and_escaping() -> None:
    entry = Entry("hold", "Q", 5, 6, 'we"ird\\', [ListedRecipient("ü@example.org")])
    line = ql.to_json(entry)
    assert '"sender": "we\\"ird\\\\"' in line and "ü@example.org" in line
    assert ql.from_json(line.encode()) == entry


@pytest.mark.parametrize("line", [
    "[]", "{}", '{"queue_name": 1}', "not json",
    '{"queue_name": "a", "queue_id": "b", "arrival_time": true, "message_size": 1, '
    '"forced_expire": false, "sender": "", "recipients": []}',
    '{"queue_name": "a", "queue_id": "b", "arrival_time": 1, "message_size": 1, '
    '"forced_expire": false, "sender": "", "recipients": [3]}',
])
def test_from_json_rejects_malformed(line: str) -> None:
    with pytest.raises(ValueError):
        ql.from_json(line)


def test_from_json_ignores_unknown_members() -> None:
    line = ('{"queue_name": "a", "queue_id": "b", "arrival_time": 1, "message_size": 1, '
            '"forced_expire": false, "sender": "", "recipients": [{"address": "x", '
            '"orig_address": "y"}], "new_member": 1}')
    assert ql.from_json(line).recipients == [ListedRecipient("x")]


@pytest.mark.parametrize("text, shown", [
    ("plain", "plain"), ("a\nb", "a?b"), ("tab\there", "tab?here"), ("del\x7f", "del?"),
    ("bad\udcffbyte", "bad?byte"), ("ünïcode", "ünïcode"),
])
def test_printable(text: str, shown: str) -> None:
    assert ql.printable(text) == shown


# -- scanning a real tree -------------------------------------------------------------

def make_queue(root: Path) -> Path:
    for name in ("maildrop", "incoming", "active", "deferred", "hold"):
        (root / name).mkdir(parents=True)
    return root


def write(root: Path, queue: str, qid: str, sender: str, rcpts: list[str], arrival: float,
          content: bytes = b"Subject: x\n\nbody\n") -> str:
    env = qfile.Envelope(sender, [qfile.Recipient(r) for r in rcpts], arrival=arrival)
    return qfile.write_queue_file(str(root / queue), qid, env, content, durable=False)


def test_scan_reads_every_queue(tmp_path: Path) -> None:
    root = make_queue(tmp_path)
    write(root, "active", "AAA1", "a@x", ["r1@y"], 100.5)
    path = write(root, "deferred", "DDD1", "", ["r1@y", "r2@y", "r3@y"], 200.0, b"x" * 3000)
    env = qfile.read_envelope(path)
    qfile.set_status(path, [env.recipients[0]], qfile.DONE, durable=False)
    qfile.append_log(path, [qfile.LogEntry(1, "delayed", "4.4.1", "old reason"),
                            qfile.LogEntry(1, "delayed", "4.4.1", "connection refused"),
                            qfile.LogEntry(2, "failed", "5.0.0", "not a delay")], durable=False)
    write(root, "hold", "HHH1", "h@x", ["r@y"], 300.0)
    write(root, "incoming", "III1", "i@x", ["bad\nname@y"], 400.0)
    name = maildrop.submit_to_maildrop(str(root), "user", ["m@y"], b"hello\n", trigger=False)
    entries = list(ql.scan(str(root)))
    assert [(e.queue_name, e.queue_id) for e in entries] == [
        ("maildrop", name.split(".")[0]), ("incoming", "III1"), ("active", "AAA1"),
        ("deferred", "DDD1"), ("hold", "HHH1")]
    md, inc, act, dfr, _hold = entries
    assert md.sender == "user" and md.message_size == 6 and md.recipients == [ListedRecipient("m@y")]
    assert "." not in md.queue_id                        # the secret suffix is never shown
    assert inc.recipients == [ListedRecipient("bad?name@y")]
    assert act.arrival_time == 100 and act.message_size == len(b"Subject: x\n\nbody\n")
    assert dfr.sender == "" and dfr.message_size == 3000
    assert dfr.recipients == [ListedRecipient("r2@y", "connection refused"), ListedRecipient("r3@y")]


def test_scan_skips_what_is_not_a_message(tmp_path: Path) -> None:
    root = make_queue(tmp_path)
    write(root, "active", "GOOD", "a@x", ["b@y"], 1.0)
    (root / "active" / ".TMP.tmp").write_bytes(b"half")
    (root / "deferred" / "CORRUPT").write_bytes(b"not a queue file")
    os.mkdir(root / "hold" / "subdir")
    os.symlink(root / "active" / "GOOD", root / "maildrop" / "LINK.0123")   # another's file
    os.link(root / "active" / "GOOD", root / "maildrop" / "HARD.0123")
    assert [e.queue_id for e in ql.scan(str(root))] == ["GOOD"]


def test_scan_of_missing_queues_is_empty(tmp_path: Path) -> None:
    assert list(ql.scan(str(tmp_path))) == []
