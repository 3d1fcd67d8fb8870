"""cleanup's address mapping hooks (cleanup.address_mapping), driven through a real Session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cleanup_session import HEADERS, Queue, converse, smtp_env

from postpy.cleanup.address_mapping import AddressMapping
from postpy.cleanup.canonical import Canonical
from postpy.cleanup.envelope import CheckedEnvelope
from postpy.cleanup.masquerade import Masquerade
from postpy.cleanup.virtual_alias import VirtualAlias
from postpy.config.maincf import Config
from postpy.ipc.messages import CleanupEnvelope, Rcpt
from postpy.mail.headers import Header
from postpy.queue import qfile
from postpy.tables.address_map import AddressMap
from postpy.tables.maps import clear_cache


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    clear_cache()
    yield Queue(tmp_path)
    clear_cache()


def amap(name: str, entries: str) -> AddressMap:
    local = {"test.example", "localhost"}
    return AddressMap(name, [f"inline:{{{entries}}}"], is_local=lambda d: d in local,
                      delimiter="+", propagate=True, myorigin="test.example")


MAPPING = AddressMapping(
    canonical=Canonical(common=amap("canonical_maps", "alice@test.example=Alice.Smith@example.com"),
                        sender=amap("sender_canonical_maps", "robot@test.example=noreply@example.com"),
                        recipient=amap("recipient_canonical_maps", "old@example.net=new@example.net")),
    masquerade=Masquerade(["example.com"], ["root"]),
    virtual=VirtualAlias(amap("virtual_alias_maps",
                              "{team@v.test=x@example.org, y@example.org}, @w.test=catch@example.org, "
                              "loop1@v.test=loop2@v.test, loop2@v.test=loop1@v.test, "
                              "new@example.net=newest@example.net")),
)


def run(queue: Queue, env: CleanupEnvelope, content: bytes, mapping: AddressMapping = MAPPING):
    queue_id, result, _ = converse(queue.settings(mapping=mapping), env, [content])
    assert result is not None
    if result.status != "ok":
        return result, None, b""
    qenv, data = qfile.read_all(str(queue.incoming / queue_id))
    return result, qenv, data


def pickup_env(sender: str, *rcpts: str, **attrs: str) -> CleanupEnvelope:
    return CleanupEnvelope(sender, [Rcpt(r) for r in rcpts], {"origin": "pickup", "uid": "1000", **attrs})


def test_envelope_sender_and_recipients(queue: Queue) -> None:
    env = smtp_env("team@v.test", "old@example.net", "anyone@w.test", "plain@example.org")
    env = CleanupEnvelope("robot@test.example", env.recipients, env.attrs)
    result, qenv, _ = run(queue, env, b"Subject: t\n\nhi\n")
    assert result.status == "ok", result
    assert qenv is not None and qenv.sender == "noreply@example.com"
    assert [(r.address, r.orig) for r in qenv.recipients] == [
        ("x@example.org", "team@v.test"), ("y@example.org", "team@v.test"),
        ("newest@example.net", "old@example.net"),        # canonical, then virtual
        ("catch@example.org", "anyone@w.test"), ("plain@example.org", "")]


def test_dsn_options_and_orig_survive_expansion_and_duplicates_go(queue: Queue) -> None:
    env = CleanupEnvelope("a@example.org", [
        Rcpt("team", orig="team", orcpt="rfc822;team@v.test", notify="SUCCESS"),
        Rcpt("x@example.org", notify="SUCCESS")], {"origin": "pickup", "uid": "0"})
    mapping = AddressMapping(virtual=VirtualAlias(amap("virtual_alias_maps",
                                                       "{team@test.example=x@example.org, y@example.org}")))
    result, qenv, _ = run(queue, env, b"Subject: t\n\nhi\n", mapping)
    assert result.status == "ok", result
    assert qenv is not None
    assert [(r.address, r.orig, r.orcpt, r.notify) for r in qenv.recipients] == [
        ("x@example.org", "team", "rfc822;team@v.test", "SUCCESS"),
        ("y@example.org", "team", "rfc822;team@v.test", "SUCCESS")]


def test_local_headers_are_mapped_and_masqueraded(queue: Queue) -> None:
    content = (b"From: Alice <alice>\nSender: robot (bot)\nReply-To: joe@host.example.com\n"
               b"To: root@host.example.com, old@example.net\nCc: undisclosed:;\n"
               b"X-Other: alice@test.example\nSubject: t\n\nhi\n")
    result, _, data = run(queue, pickup_env("alice", "bob@example.org"), content)
    assert result.status == "ok", result
    assert b"From: Alice <Alice.Smith@example.com>\n" in data          # qualified, canonical
    assert b"Sender: noreply@example.com (bot)\n" in data               # sender_canonical
    assert b"Reply-To: joe@example.com\n" in data                       # masqueraded
    assert b"To: root@host.example.com, new@example.net\n" in data      # exception; recipient table
    assert b"Cc: undisclosed:;\n" in data
    assert b"X-Other: alice@test.example\n" in data                     # not an address header
    assert b"Return-Path" not in data


def test_remote_headers_are_left_alone_but_the_envelope_is_mapped(queue: Queue) -> None:
    env = smtp_env("bob@example.org")
    env = CleanupEnvelope("alice@test.example", env.recipients, env.attrs)
    result, qenv, data = run(queue, env, b"From: alice@test.example\nTo: joe@host.example.com\n\nhi\n")
    assert result.status == "ok", result
    assert qenv is not None and qenv.sender == "Alice.Smith@example.com"
    assert b"From: alice@test.example\nTo: joe@host.example.com\n" in data


def test_extracted_recipients_are_expanded(queue: Queue) -> None:
    env = pickup_env("carol", extract="yes")
    result, qenv, data = run(queue, env, b"To: team@v.test\nSubject: t\n\nhi\n")
    assert result.status == "ok", result
    assert qenv is not None
    assert [(r.address, r.orig) for r in qenv.recipients] == [
        ("x@example.org", "team@v.test"), ("y@example.org", "team@v.test")]
    assert b"To: team@v.test\n" in data                                 # virtual: envelope only


def test_no_address_mappings_turns_everything_off(queue: Queue) -> None:
    env = smtp_env("team@v.test", overrides="no_address_mappings,no_header_body_checks")
    env = CleanupEnvelope("robot@test.example", env.recipients, env.attrs)
    result, qenv, _ = run(queue, env, b"Subject: t\n\nhi\n")
    assert result.status == "ok", result
    assert qenv is not None and qenv.sender == "robot@test.example"
    assert [r.address for r in qenv.recipients] == ["team@v.test"]
    assert "overrides" not in qenv.attrs


def test_loop_refuses_smtp_mail_and_returns_local_mail(queue: Queue) -> None:
    result, _, _ = run(queue, smtp_env("loop1@v.test", "bob@example.org"), b"Subject: t\n\nhi\n")
    assert (result.status, result.reply) == ("perm", "5.4.6 Virtual alias loop for <loop1@v.test>")
    assert queue.files() == []
    result, qenv, _ = run(queue, pickup_env("carol@test.example", "loop1@v.test"), b"Subject: t\n\nhi\n")
    assert result.status == "ok" and "returned: 5.4.6 Virtual alias loop" in result.reply
    assert qenv is not None and [r.status for r in qenv.recipients] == [qfile.BOUNCED]


def test_table_failure_is_temporary(queue: Queue, tmp_path: Path) -> None:
    broken = AddressMapping(canonical=Canonical(common=AddressMap("canonical_maps",
                                                                  [f"lmdb:{tmp_path}/none"])))
    result, _, _ = run(queue, smtp_env(), b"Subject: t\n\nhi\n", broken)
    assert (result.status, result.reply) == ("temp", "4.3.0 Temporary lookup failure")
    assert queue.files() == []
    assert "address mapping lookup problem for alice@example.org" in queue.log()


def test_headers_hook_keeps_unparsable_and_truncated_headers() -> None:
    env = CheckedEnvelope("a@x", [], {"origin": "pickup"})
    headers = [Header("From", b"From: <<broken alice@test.example\n"),
               Header("To", b"To: alice@test.example\n", truncated=True),
               Header("Cc", b"Cc: Al (x) <alice@test.example> (y),\n\tb@h.example.com\n")]
    out = MAPPING.map_headers(headers, env)
    assert out[:2] == headers[:2]
    assert out[2].raw == b"Cc: Al (x) <Alice.Smith@example.com> (y),\n\tb@example.com\n"


def test_from_config_and_defaults(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), explicit={"myhostname": "mx.example"})
    mapping = AddressMapping.from_config(cfg)
    assert not mapping.active(CheckedEnvelope("a@x", [], {}))
    assert HEADERS.myorigin == "test.example"
