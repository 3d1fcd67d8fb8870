"""cleanup applying milter changes (postpy.cleanup.milter_edits) to an
unfinished queue file: headers by index, envelope, body replacement."""

from __future__ import annotations

from pathlib import Path

from postpy.cleanup.envelope import CheckedEnvelope
from postpy.cleanup.milter_edits import edit_headers, rewrite, split_headers
from postpy.ipc.messages import CleanupEdits, HeaderEdit, Rcpt
from postpy.queue import qfile

HEAD = (b"Received: from x by y\n\tfor <c@d>\nSubject: one\nX-Tag: a\nX-Tag: b\n"
        b"To: c@d\n")


def names(block: bytes, edits: list[HeaderEdit]) -> bytes:
    return b"".join(h.raw for h in edit_headers(split_headers(block), edits))


def test_header_edits_count_what_the_milter_saw() -> None:
    out = names(HEAD, [HeaderEdit("insert", "X-Top", " 1", 0), HeaderEdit("add", "X-End", " 2"),
                       HeaderEdit("change", "x-tag", " B", 2), HeaderEdit("change", "Subject", "", 1),
                       HeaderEdit("change", "X-Missing", " m", 1)])
    assert out == (b"Received: from x by y\n\tfor <c@d>\nX-Top: 1\nX-Tag: a\nX-Tag: B\nTo: c@d\n"
                   b"X-End: 2\nX-Missing: m\n")
    assert names(b"Subject: s\n", [HeaderEdit("insert", "X-A", " folded\n\tline", 0)]) == \
        b"X-A: folded\n\tline\nSubject: s\n"


def make_file(tmp: Path, content: bytes) -> tuple[qfile.QueueFileWriter, CheckedEnvelope]:
    env = CheckedEnvelope("a@b", [qfile.Recipient("c@d"), qfile.Recipient("e@f")], {}, {})
    writer = qfile.QueueFileWriter(str(tmp), "QID", qfile.Envelope(env.sender, env.recipients, arrival=1.0))
    writer.write(content)
    return writer, env


def test_rewrite_envelope_headers_and_body(tmp_path: Path) -> None:
    body = b"line\n" * 30000
    writer, env = make_file(tmp_path, HEAD + b"\n" + body)
    edits = CleanupEdits(headers=[HeaderEdit("add", "DKIM-Signature", " v=1")], sender="s@new",
                         add_recipients=[Rcpt("g@h", notify="NEVER")], delete_recipients=["E@F"],
                         hold="why")
    new, last = rewrite(writer, edits, env, 1.0, "")
    path = new.finish()
    envelope, content = qfile.read_all(path)
    assert envelope.sender == "s@new"
    assert [(r.address, r.notify) for r in envelope.recipients] == [("c@d", ""), ("g@h", "NEVER")]
    assert content == HEAD + b"DKIM-Signature: v=1\n\n" + body
    assert last == b"\n" and env.attrs["hold"] == "why"
    assert not (tmp_path / ".QID.tmp").exists()


def test_rewrite_with_a_new_body(tmp_path: Path) -> None:
    writer, env = make_file(tmp_path, b"Subject: s\n\nold body\n")
    new, _ = rewrite(writer, CleanupEdits(replace_body=True), env, 1.0, "")
    new.write(b"new body\n")
    assert qfile.read_all(new.finish())[1] == b"Subject: s\n\nnew body\n"


def test_rewrite_header_only_message(tmp_path: Path) -> None:
    writer, env = make_file(tmp_path, b"Subject: s\n")
    new, _ = rewrite(writer, CleanupEdits(headers=[HeaderEdit("add", "X-A", " 1")]), env, 1.0, "")
    assert qfile.read_all(new.finish())[1] == b"Subject: s\nX-A: 1\n"
