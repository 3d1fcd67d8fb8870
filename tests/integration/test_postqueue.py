"""postqueue -j, -f, -i, -s and its usage errors against a real system."""

from __future__ import annotations

import json
import pwd

import pytest
from test_mailq import MASTER_CF, REFUSED, ordinary_user, plant_example, postqueue_as  # noqa: F401

KEYS = ["queue_name", "queue_id", "arrival_time", "message_size", "forced_expire", "sender", "recipients"]

WITH_QMGR = MASTER_CF + "qmgr      unix  n       -       n       300     1       qmgr\n"


@pytest.fixture
def system(mta_factory):
    return mta_factory(master_cf=MASTER_CF, service_throttle_time="1s")


def test_json_listing(system):
    plant_example(system)
    result = system.run("postqueue", "-j")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stdout.endswith("}\n")
    objects = [json.loads(line) for line in lines]
    for obj in objects:
        assert list(obj) == KEYS
    active, deferred, hold = objects
    assert active == {"queue_name": "active", "queue_id": "4cBfXL5Jc8z2FqA", "arrival_time": 1756116672,
                      "message_size": 2143, "forced_expire": False, "sender": "alice@example.org",
                      "recipients": [{"address": "bob@example.net"}]}
    assert deferred["recipients"] == [
        {"address": "carol@example.com", "delay_reason": REFUSED},
        {"address": "dave@example.com", "delay_reason": REFUSED}]
    assert hold["queue_name"] == "hold" and hold["sender"] == ""
    assert lines[1].startswith('{"queue_name": "deferred", "queue_id": "4cBfXL5Jc8z2FqB", '
                               '"arrival_time": 1756030272, "message_size": 5120, "forced_expire": false, ')


def test_json_of_an_empty_queue_is_empty(system):
    result = system.run("postqueue", "-j")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("args, pattern", [
    ([], "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"),
    (["-p", "-j"], "usage: postqueue"),
    (["-p", "extra"], "usage: postqueue"),
    (["-z"], "usage: postqueue"),
    (["-i"], "requires argument"),
    (["-i", "bad id"], "invalid queue ID"),
    (["-s", "bad site"], "invalid site name"),
])
def test_usage_errors(system, args, pattern):
    result = system.run("postqueue", *args)
    assert result.returncode == 64
    assert result.stderr.startswith("postqueue: fatal: ") and pattern in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_flush_without_qmgr_is_unavailable(system):
    for args in (["-f"], ["-i", "4cBfXL5Jc8z2FqB"], ["-s", "example.com"]):
        result = system.run("postqueue", *args)
        assert result.returncode == 69, args
        assert "mail system is down" in result.stderr
    result = system.run("sendmail", "-q")
    assert result.returncode == 69 and result.stderr.startswith("sendmail: fatal: Cannot flush")


def test_flush_requests_reach_qmgr(mta_factory):
    mta = mta_factory(master_cf=WITH_QMGR, service_throttle_time="1s")
    for command in (["postqueue", "-f"], ["postqueue", "-i", "4cBfXL5Jc8z2FqB"],
                    ["postqueue", "-s", "example.com"], ["postqueue", "-s", "[192.0.2.1]"],
                    ["sendmail", "-q"], ["sendmail", "-qRexample.com"], ["sendmail", "-qI4cBfXL5Jc8z2FqB"],
                    ["sendmail", "-q1h"]):
        result = mta.run(*command)
        assert (result.returncode, result.stderr) == (0, ""), command


def test_flush_acl(mta_factory, ordinary_user):  # noqa: F811
    mta = mta_factory(master_cf=WITH_QMGR, authorized_flush_users="root")
    status, stdout, stderr = postqueue_as(ordinary_user, mta.config_dir, "f", "postqueue")
    uid = pwd.getpwnam(ordinary_user).pw_uid
    assert status == 77
    assert stderr == f"postqueue: fatal: User {ordinary_user}({uid}) is not allowed to flush the mail queue\n"
    assert mta.run("postqueue", "-f").returncode == 0          # root may
