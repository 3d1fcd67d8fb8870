"""pipe's flag X: a success is reported "relayed" unless the command delivers
for good; qmgr records that action for the success notice (RFC 3464)."""

from __future__ import annotations

import time

import pytest

from postpy.ipc.messages import RecipientResult
from postpy.pipe.service import PipeAgent, Verdict
from postpy.pipe.settings import parse
from postpy.qmgr.message import ActiveMessage, outcome
from postpy.queue import qfile


def agent(flags: str) -> PipeAgent:
    settings = parse([f"flags={flags}", "user=nobody", "argv=/bin/true"], "postpy")
    return PipeAgent("filter", settings, "", time_limit=10, delimiter="+", config_dir="/nonexistent")


@pytest.mark.parametrize(("flags", "action"), [("R", "relayed"), ("RX", ""), ("X", "")])
def test_success_action(flags: str, action: str) -> None:
    assert agent(flags)._action(Verdict("sent", "2.0.0", "delivered via filter service")) == action
    assert agent(flags)._action(Verdict("bounced", "5.3.0", "exit 1")) == ""


@pytest.mark.parametrize(("action", "recorded"), [("relayed", "relayed"), ("", "delivered")])
def test_qmgr_records_the_action_for_a_success_notice(action: str, recorded: str) -> None:
    env = qfile.Envelope("a@example.org", [qfile.Recipient("b@example.org", notify="SUCCESS")],
                         arrival=time.time())
    _, entries = outcome(ActiveMessage("QID", env),
                         [RecipientResult(0, "sent", "2.0.0", "ok", "filter", action)])
    assert [e.action for e in entries] == [recorded]
