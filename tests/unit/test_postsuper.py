"""postsuper's parts in-process: option parsing, ID checks, authorization, summaries."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from postpy.cli import postsuper
from postpy.cli.postsuper import Fatal, Options, UsageError, parse_args, valid_id
from postpy.queue import qid


@pytest.mark.parametrize(("argv", "ids", "queues", "structure", "purge"), [
    (["-d", "ABC"], {"d": ["ABC"]}, [], False, False),
    (["-d", "A", "-d", "B", "-h", "ALL"], {"d": ["A", "B"], "h": ["ALL"]}, [], False, False),
    (["-H", "-", "hold"], {"H": ["-"]}, ["hold"], False, False),
    (["-r", "ALL", "deferred", "hold"], {"r": ["ALL"]}, ["deferred", "hold"], False, False),
    (["-s"], {}, [], True, False),
    (["-sp", "-v"], {}, [], True, True),
    (["-c", "/etc/x", "-p"], {}, [], False, True),
    (["-d", "ALL", "maildrop"], {"d": ["ALL"]}, ["maildrop"], False, False),
])
def test_parse_args(argv: list[str], ids: dict[str, list[str]], queues: list[str],
                    structure: bool, purge: bool) -> None:
    opts = parse_args(argv)
    assert (opts.ids, opts.queues, opts.structure, opts.purge) == (ids, queues, structure, purge)


@pytest.mark.parametrize(("argv", "message"), [
    ([], "nothing to do"),
    (["-v"], "nothing to do"),
    (["-d"], "requires argument"),
    (["-q"], "not recognized"),
    (["-e", "ALL"], "not recognized"),
    (["-f", "ALL"], "not recognized"),
    (["-S"], "not recognized"),
    (["-d", "ALL", "corrupt"], "invalid queue name: corrupt"),
    (["-d", "ALL", "../etc"], "invalid queue name"),
])
def test_parse_args_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


@pytest.mark.parametrize(("name", "ok"), [
    ("5BRWBt4Q5sz9xB", True),
    ("5BRWBt4Q5sz9xB.0123456789abcdef0123456789abcdef", True),     # a maildrop file
    ("anything-else", True),
    ("", False),
    (".hidden", False),
    (".5BRWBt4Q5sz9xB.tmp", False),
    ("../etc/passwd", False),
    ("deferred/ABC", False),
    ("a\0b", False),
    ("x" * 101, False),
])
def test_valid_id(name: str, ok: bool) -> None:
    assert valid_id(name) is ok


def test_authorize_root_owner_and_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.stat(tmp_path).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    postsuper.authorize("nosuchuser", "/nonexistent")
    stranger = 54321
    while True:
        try:
            pwd.getpwuid(stranger)
        except KeyError:
            break
        stranger += 1
    monkeypatch.setattr(os, "geteuid", lambda: stranger)
    with pytest.raises(Fatal, match="reserved for the superuser"):
        postsuper.authorize("postpy", str(tmp_path))
    with pytest.raises(Fatal, match="reserved for the superuser"):
        postsuper.authorize("postpy", "/nonexistent")
    # the owner of the queue directory (embedded mode)
    monkeypatch.setattr(os, "geteuid", lambda: me)
    postsuper.authorize("nosuchuser", str(tmp_path))
    # mail_owner by name, whatever owns the directory
    name = pwd.getpwuid(me).pw_name
    postsuper.authorize(name, "/nonexistent")


@pytest.mark.parametrize(("counts", "lines"), [
    ({}, []),
    ({"Deleted": 1}, ["Deleted: 1 message"]),
    ({"Requeued": 3, "Deleted": 2, "Placed on hold": 1, "Released from hold": 0},
     ["Deleted: 2 messages", "Placed on hold: 1 message", "Requeued: 3 messages"]),
])
def test_summaries(counts: dict[str, int], lines: list[str]) -> None:
    work = postsuper.Super(lambda text: None)
    work.counts = counts
    assert work.summaries() == lines


def test_writer_alive() -> None:
    from postpy.queue.qid import new_queue_id

    mine = new_queue_id()
    assert qid.creator_alive(mine)
    assert qid.creator_alive(f"{mine}.{'a' * 32}")
    assert not qid.creator_alive("not-an-id")
    assert not qid.creator_alive(mine.partition("z")[0] + "z0")     # pid 0 is nobody


def test_main_usage_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert postsuper.main(["-x"]) == 64
    err = capsys.readouterr().err
    assert err.startswith("postsuper: fatal: option -x not recognized\n")
    assert postsuper.USAGE in err


def test_run_operations_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from postpy.queue import qfile
    from postpy.queue.qid import new_queue_id

    monkeypatch.chdir(tmp_path)
    for queue in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt", "public"):
        (tmp_path / queue).mkdir()
    env = qfile.Envelope("a@example.org", [qfile.Recipient("b@example.net")], arrival=1.0)
    ids = [new_queue_id() for _ in range(3)]
    for queue_id, queue in zip(ids, ("incoming", "deferred", "hold"), strict=True):
        qfile.write_queue_file(queue, queue_id, env, b"x\n", durable=False)
    lines = postsuper.run(Options(ids={"h": ["ALL"], "d": [ids[2]]}))
    assert lines == ["Deleted: 1 message", "Placed on hold: 2 messages"]
    assert sorted(os.listdir("hold")) == sorted(ids[:2])
