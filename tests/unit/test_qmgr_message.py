"""qmgr's reading of delivery results (postpy/qmgr/message.py), table-driven."""

from __future__ import annotations

import pytest

from postpy.ipc.messages import RecipientResult
from postpy.qmgr.message import ActiveMessage, outcome
from postpy.queue import qfile


def message(*notify: str, done: tuple[int, ...] = ()) -> ActiveMessage:
    rcpts = [qfile.Recipient(f"r{i}@x", notify=n, index=i,
                             status=qfile.DONE if i in done else qfile.PENDING)
             for i, n in enumerate(notify)]
    return ActiveMessage("5BRW00000Bz9", qfile.Envelope("s@x", rcpts, arrival=1.0))


@pytest.mark.parametrize("notify, status, want_status, want_action", [
    ("", "sent", qfile.DONE, None),
    ("SUCCESS,FAILURE", "sent", qfile.SUCCESS, "delivered"),
    ("", "bounced", qfile.BOUNCED, "failed"),
    ("NEVER", "bounced", qfile.BOUNCED, "failed"),       # bounce decides whether to tell
    ("", "deferred", None, "delayed"),
])
def test_one_result(notify, status, want_status, want_action):
    msg = message(notify)
    statuses, entries = outcome(msg, [RecipientResult(0, status, "9.9.9", "text", "relay")])
    assert {k: [r.index for r in v] for k, v in statuses.items()} == (
        {want_status: [0]} if want_status else {})
    assert [(e.index, e.action, e.dsn, e.text) for e in entries] == (
        [(0, want_action, "9.9.9", "text")] if want_action else [])


def test_results_for_unknown_or_finished_recipients_are_ignored():
    msg = message("", "", done=(1,))
    statuses, entries = outcome(msg, [RecipientResult(1, "bounced", "5.0.0", "late", ""),
                                      RecipientResult(7, "sent", "2.0.0", "who?", "")])
    assert (statuses, entries) == ({}, [])
