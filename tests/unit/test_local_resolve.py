"""local's recipient expansion (postpy.local.resolve): a plan, nothing delivered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_local_support import (  # noqa: F401  (the *_fixture names are fixtures)
    IS_ROOT,
    FakeUsers,
    acting_uid,
    base_fixture,
    build_aliases,
    chown_to_actor,
    make_settings,
    users_fixture,
)

from postpy.local.resolve import (
    COMMAND,
    FILE,
    FORWARD,
    MAILBOX,
    MAILDIR,
    Plan,
    Resolver,
    split_local,
)
from postpy.util.privs import Identity

ALIASES = """\
staff: alice, bob@remote.example, "|/usr/bin/logger staff"
files: /var/tmp/archive, /var/tmp/maildir/
alice+news: bob
self: self, alice
loopa: loopb
loopb: loopa
root: \\alice
list: alice, bob
owner-list: alice
mixed: MixedCase@test.example
"""


def plan_of(settings, address: str, delivered_to: frozenset[str] = frozenset(),
            sender: str = "sender@remote.example", warnings: list[str] | None = None) -> Plan:
    warn = warnings.append if warnings is not None else (lambda text: None)
    return Resolver(settings, delivered_to, sender, warn).resolve(address)


def summary(plan: Plan) -> list[tuple[str, str]]:
    return [(d.kind, d.value) for d in plan.destinations]


def failures(plan: Plan) -> list[tuple[str, str, str]]:
    return [(f.rcpt.address, f.error.dsn, f.error.text) for f in plan.failures]


@pytest.fixture
def settings(base: Path, users: FakeUsers):
    return make_settings(base, users, alias_maps=build_aliases(base, ALIASES),
                         recipient_delimiter="+")


@pytest.mark.parametrize("address, delimiter, expected", [
    ("alice@x.example", "+", ("alice", "alice", "", "x.example")),
    ("Alice+News@X.Example", "+", ("alice+news", "alice", "news", "x.example")),
    ("alice+a+b@x", "+", ("alice+a+b", "alice", "a+b", "x")),
    ("alice-a@x", "+-", ("alice-a", "alice", "a", "x")),
    ("+alice@x", "+", ("+alice", "+alice", "", "x")),          # no empty user part
    ("owner-list@x", "-", ("owner-list", "owner-list", "", "x")),
    ("list-request@x", "-", ("list-request", "list-request", "", "x")),
    ("alice-x@x", "-", ("alice-x", "alice", "x", "x")),
    ('"a b"@x', "+", ("a b", "a b", "", "x")),
    ("alice", "+", ("alice", "alice", "", "")),
    ("alice+x@y", "", ("alice+x", "alice+x", "", "y")),
])
def test_split_local(address: str, delimiter: str, expected: tuple[str, str, str, str]) -> None:
    got = split_local(address, delimiter)
    assert (got.local, got.user, got.extension, got.domain) == expected
    assert got.address == address


def test_plain_user_gets_mailbox(settings) -> None:
    plan = plan_of(settings, "alice@mx.test.example")
    assert summary(plan) == [(MAILBOX, "alice")]
    assert plan.destinations[0].rcpt.address == "alice@mx.test.example"
    owner = plan.destinations[0].owner
    assert owner is not None and owner.name == "alice"


def test_case_is_folded_for_decisions(settings) -> None:
    assert summary(plan_of(settings, "ALICE@MX.TEST.EXAMPLE")) == [(MAILBOX, "alice")]


def test_unknown_user(settings) -> None:
    plan = plan_of(settings, "nosuch@mx.test.example")
    assert summary(plan) == []
    assert failures(plan) == [("nosuch@mx.test.example", "5.1.1", 'unknown user: "nosuch"')]


def test_alias_with_several_kinds(settings) -> None:
    plan = plan_of(settings, "staff@test.example")
    assert summary(plan) == [(MAILBOX, "alice"), (FORWARD, "bob@remote.example"),
                             (COMMAND, "/usr/bin/logger staff")]
    assert not plan.failures
    command = plan.destinations[2]
    assert command.rcpt.address == "staff@test.example"
    assert command.privs.uid != 0


def test_files_and_maildirs(settings) -> None:
    plan = plan_of(settings, "files@test.example")
    assert summary(plan) == [(FILE, "/var/tmp/archive"), (MAILDIR, "/var/tmp/maildir/")]


def test_extension_alias_first_then_user(settings) -> None:
    assert summary(plan_of(settings, "alice+news@test.example")) == [(MAILBOX, "bob")]
    plan = plan_of(settings, "alice+other@test.example")
    assert summary(plan) == [(MAILBOX, "alice")]
    assert plan.destinations[0].rcpt.extension == "other"


def test_self_reference_goes_to_the_mailbox(base: Path, users: FakeUsers) -> None:
    spec = build_aliases(base, "alice: alice, bob\n")
    settings = make_settings(base, users, alias_maps=spec)
    plan = plan_of(settings, "alice@test.example")
    assert summary(plan) == [(MAILBOX, "alice"), (MAILBOX, "bob")]


def test_self_reference_of_a_non_user(settings) -> None:
    plan = plan_of(settings, "self@test.example")
    assert summary(plan) == [(MAILBOX, "alice")]
    assert [f[1:] for f in failures(plan)] == [("5.1.1", 'unknown user: "self"')]


def test_alias_loop_bounces_instead_of_spinning(settings) -> None:
    plan = plan_of(settings, "loopa@test.example")
    assert summary(plan) == []
    assert [f[1] for f in failures(plan)] == ["5.4.6"]
    assert "mail forwarding loop" in plan.failures[0].error.text


def test_delivered_to_loop(settings) -> None:
    plan = plan_of(settings, "Alice@MX.test.example",
                   delivered_to=frozenset({"alice@mx.test.example"}))
    assert summary(plan) == []
    assert failures(plan) == [("Alice@MX.test.example", "5.4.6",
                               "mail forwarding loop for Alice@MX.test.example")]


def test_delivered_to_loop_inside_expansion(settings) -> None:
    plan = plan_of(settings, "staff@test.example", delivered_to=frozenset({"alice@mx.test.example"}))
    assert (MAILBOX, "alice") not in summary(plan)
    assert [f[1] for f in failures(plan)] == ["5.4.6"]


def test_backslash_user(settings) -> None:
    assert summary(plan_of(settings, "root@test.example")) == [(MAILBOX, "alice")]


def test_owner_alias_changes_the_sender(settings) -> None:
    plan = plan_of(settings, "list@test.example")
    assert {d.sender for d in plan.destinations} == {"owner-list@mx.test.example"}
    null = plan_of(settings, "list@test.example", sender="")
    assert {d.sender for d in null.destinations} == {""}


def test_alias_to_local_address_with_domain(settings) -> None:
    plan = plan_of(settings, "mixed@test.example")
    assert failures(plan) == [("MixedCase@test.example", "5.1.1", 'unknown user: "mixedcase"')]


def test_duplicates_dropped(base: Path, users: FakeUsers) -> None:
    spec = build_aliases(base, "a: alice, b, c\nb: alice\nc: alice, bob@r.example, bob@R.example\n")
    settings = make_settings(base, users, alias_maps=spec)
    assert summary(plan_of(settings, "a@test.example")) == [
        (MAILBOX, "alice"), (FORWARD, "bob@r.example")]


def test_unqualified_target_gets_myorigin(base: Path, users: FakeUsers) -> None:
    spec = build_aliases(base, "x: alice\ny: carol\n")
    settings = make_settings(base, users, alias_maps=spec, myorigin="elsewhere.example")
    assert summary(plan_of(settings, "x@test.example")) == [(FORWARD, "alice@elsewhere.example")]


def test_table_unavailable_defers(base: Path, users: FakeUsers) -> None:
    settings = make_settings(base, users, alias_maps=f"lmdb:{base}/etc/missing")
    warnings: list[str] = []
    plan = plan_of(settings, "alice@test.example", warnings=warnings)
    assert [f[1:] for f in failures(plan)] == [("4.3.0", "alias database unavailable")]
    assert warnings and "missing" in warnings[0]


# -- :include: ---------------------------------------------------------------------

def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_include_addresses(base: Path, users: FakeUsers) -> None:
    inc = write(base / "shared" / "members", "# members\nalice\nbob, carol@remote.example\n")
    spec = build_aliases(base, f"members: :include:{inc}\n")
    settings = make_settings(base, users, alias_maps=spec)
    assert summary(plan_of(settings, "members@test.example")) == [
        (MAILBOX, "alice"), (MAILBOX, "bob"), (FORWARD, "carol@remote.example")]


def test_include_commands_and_files_restricted_by_default(base: Path, users: FakeUsers) -> None:
    inc = write(base / "shared" / "members", '"|cat > /dev/null"\n/var/tmp/out\n')
    spec = build_aliases(base, f"members: :include:{inc}\n")
    settings = make_settings(base, users, alias_maps=spec)
    plan = plan_of(settings, "members@test.example")
    assert summary(plan) == []
    assert [f[1:] for f in failures(plan)] == [("5.7.1", "mail to command is restricted"),
                                               ("5.7.1", "mail to file is restricted")]
    allowed = make_settings(base, users, alias_maps=spec, allow_mail_to_commands="alias, include",
                            allow_mail_to_files="alias, forward, include")
    plan = plan_of(allowed, "members@test.example")
    assert summary(plan) == [(COMMAND, "cat > /dev/null"), (FILE, "/var/tmp/out")]


def test_include_owner_privileges(base: Path, users: FakeUsers) -> None:
    inc = write(base / "shared" / "members", '"|true"\n')
    if IS_ROOT:
        os.chown(inc, 54321, 54321)       # commands in it run as its owner
    spec = build_aliases(base, f"members: :include:{inc}\n")
    settings = make_settings(base, users, alias_maps=spec, allow_mail_to_commands="include")
    plan = plan_of(settings, "members@test.example")
    assert summary(plan) == [(COMMAND, "true")]
    assert plan.destinations[0].privs.uid == (54321 if IS_ROOT else os.getuid())


def test_include_missing_or_relative(base: Path, users: FakeUsers) -> None:
    spec = build_aliases(base, f"a: :include:{base}/shared/none\nb: :include:relative\n")
    settings = make_settings(base, users, alias_maps=spec)
    plan = plan_of(settings, "a@test.example")
    assert failures(plan)[0][1] == "5.3.0"
    assert "cannot open include file" in failures(plan)[0][2]
    assert failures(plan_of(settings, "b@test.example"))[0][1] == "5.3.5"


def test_include_of_itself_is_ignored(base: Path, users: FakeUsers) -> None:
    path = base / "shared" / "loop"
    write(path, f"alice, :include:{path}\n")
    spec = build_aliases(base, f"l: :include:{path}\n")
    warnings: list[str] = []
    plan = plan_of(make_settings(base, users, alias_maps=spec), "l@test.example", warnings=warnings)
    assert summary(plan) == [(MAILBOX, "alice")]
    assert any("includes itself" in w for w in warnings)


# -- .forward -----------------------------------------------------------------------

def forward_file(users: FakeUsers, name: str, text: str, mode: int = 0o644,
                 filename: str = ".forward") -> Path:
    path = Path(users.users[name].home) / filename
    path.write_text(text)
    os.chmod(path, mode)
    chown_to_actor(path)
    return path


def test_forward_is_followed(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "bob@remote.example\n|/bin/true\n~/inbox\n")
    plan = plan_of(settings, "alice@test.example")
    home = users.users["alice"].home
    assert summary(plan) == [(FORWARD, "bob@remote.example"), (COMMAND, "/bin/true"),
                             (FILE, f"{home}/inbox")]


def test_forward_self_reference_and_backslash(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "alice, \\alice, bob\n")
    assert summary(plan_of(settings, "alice@test.example")) == [(MAILBOX, "alice"), (MAILBOX, "bob")]


def test_empty_forward_means_mailbox(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "# nothing\n\n")
    assert summary(plan_of(settings, "alice@test.example")) == [(MAILBOX, "alice")]


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_writable_forward_is_ignored(settings, users: FakeUsers, mode: int) -> None:
    path = forward_file(users, "alice", "bob@remote.example\n", mode=mode)
    warnings: list[str] = []
    plan = plan_of(settings, "alice@test.example", warnings=warnings)
    assert summary(plan) == [(MAILBOX, "alice")]
    assert warnings == [f"{path}: writable by group or others: ignored"]


def test_forward_with_extension_first(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "bob\n", filename=".forward+lists")
    forward_file(users, "alice", "carol@remote.example\n")
    assert summary(plan_of(settings, "alice+lists@test.example")) == [(MAILBOX, "bob")]
    assert summary(plan_of(settings, "alice+other@test.example")) == [
        (FORWARD, "carol@remote.example")]
    assert summary(plan_of(settings, "alice@test.example")) == [(FORWARD, "carol@remote.example")]


def test_forward_loop_between_users(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "bob\n")
    forward_file(users, "bob", "alice\n")
    plan = plan_of(settings, "alice@test.example")
    # alice -> bob -> alice: the second visit of alice's .forward is skipped.
    assert summary(plan) == [(MAILBOX, "alice")]


def test_forward_user_tilde_rejected(settings, users: FakeUsers) -> None:
    forward_file(users, "alice", "~bob/file\n")
    plan = plan_of(settings, "alice@test.example")
    assert failures(plan)[0][1] == "5.3.5"


@pytest.mark.parametrize("extension", ["../../shared/evil", ".hidden", "a/b"])
def test_forward_extension_cannot_leave_home(settings, users: FakeUsers, base: Path,
                                             extension: str) -> None:
    evil = base / "shared" / "evil"
    evil.write_text("bob@remote.example\n")
    chown_to_actor(evil)
    forward_file(users, "alice", "carol@remote.example\n")
    plan = plan_of(settings, f"alice+{extension}@test.example")
    assert summary(plan) == [(FORWARD, "carol@remote.example")]


def test_long_alias_chain_is_cut_as_a_loop(base: Path, users: FakeUsers) -> None:
    chain = "".join(f"a{i}: a{i + 1}\n" for i in range(200)) + "a200: alice\n"
    settings = make_settings(base, users, alias_maps=build_aliases(base, chain))
    plan = plan_of(settings, "a0@test.example")
    assert summary(plan) == []
    assert [f[1] for f in failures(plan)] == ["5.4.6"]
    short = "".join(f"b{i}: b{i + 1}\n" for i in range(10)) + "b10: alice\n"
    settings = make_settings(base, users, alias_maps=build_aliases(base, short, "short"))
    assert summary(plan_of(settings, "b0@test.example")) == [(MAILBOX, "alice")]


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_writable_include_is_refused(base: Path, users: FakeUsers, mode: int) -> None:
    inc = write(base / "shared" / "members", 'alice, bob@remote.example\n"|true"\n', mode)
    spec = build_aliases(base, f"members: :include:{inc}\n")
    settings = make_settings(base, users, alias_maps=spec, allow_mail_to_commands="include")
    warnings: list[str] = []
    plan = plan_of(settings, "members@test.example", warnings=warnings)
    assert summary(plan) == []
    assert failures(plan) == [("members@test.example", "4.3.5", "mail system configuration "
                               f"error: include file {inc} is writable by group or others")]
    assert warnings == [f"include file {inc}: writable by group or others: refused"]


# -- root ---------------------------------------------------------------------------

def test_root_mailbox_is_written_as_root_the_rest_as_default_privs(base: Path,
                                                                    users: FakeUsers) -> None:
    home = base / "home" / "root"
    home.mkdir()
    users.users["root"] = Identity("root", 0, 0, str(home), "/bin/sh")
    spec = build_aliases(base, 'cron: root, "|true"\n')
    settings = make_settings(base, users, alias_maps=spec)
    plan = plan_of(settings, "cron@test.example")
    assert summary(plan) == [(MAILBOX, "root"), (COMMAND, "true")]
    mailbox_privs, command_privs = (d.privs.uid for d in plan.destinations)
    assert mailbox_privs == (0 if IS_ROOT else os.getuid())
    assert command_privs == (acting_uid()[0] if IS_ROOT else os.getuid())


@pytest.mark.skipif(not IS_ROOT, reason="needs root: a .forward owned by root")
def test_root_forward_targets_run_as_default_privs(base: Path, users: FakeUsers) -> None:
    home = base / "home" / "root"
    home.mkdir()
    users.users["root"] = Identity("root", 0, 0, str(home), "/bin/sh")
    (home / ".forward").write_text('"|true"\n/var/tmp/x\n\\root\n')
    plan = plan_of(make_settings(base, users), "root@test.example")
    assert summary(plan) == [(COMMAND, "true"), (FILE, "/var/tmp/x"), (MAILBOX, "root")]
    nobody = acting_uid()[0]
    assert [d.privs.uid for d in plan.destinations] == [nobody, nobody, 0]
