"""postconf as a command: show, edit, remove, master.cf listing, errors and exit codes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from postpy.cli.postconf import TABLE_TYPES, edit_text
from postpy.config.maincf import parse_main_cf, system_hostname
from postpy.config.params import PARAMS

BIN = Path(sys.executable).parent

MAIN_CF = """\
# main.cf for a test
#   indented comment

myhostname = mx.example.org
myorigin = $myhostname
mynetworks = 127.0.0.0/8
    10.0.0.0/8
# a comment inside a continued setting
    192.168.0.0/16
relayhost =
my_custom = hello
"""

MASTER_CF = """\
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:2525   inet  n  -  n  -    -  smtpd
pickup           unix  n  -  n  60   1  pickup
submission       inet  n  -  n  -    -  smtpd
    -o syslog_name=postpy/submission
    -o smtpd_tls_security_level=encrypt
cleanup          unix  -  -  n  -    0  cleanup
"""


def run(*args: str, env_config: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    if env_config is not None:
        env["MAIL_CONFIG"] = env_config
    return subprocess.run([str(BIN / "postconf"), *args], capture_output=True, text=True,
                          env=env, timeout=60, input=stdin)


@pytest.fixture
def cfdir(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "main.cf").write_text(MAIN_CF)
    (d / "master.cf").write_text(MASTER_CF)
    return d


def default_line(name: str, default: str, config_dir: str) -> str:
    value = {"myhostname": system_hostname(), "config_directory": config_dir,
             "mydomain": system_hostname().partition(".")[2] or "localdomain"}.get(name, default)
    return f"{name} = {value}" if value else f"{name} ="


# -- showing --------------------------------------------------------------------

def test_defaults_list_every_parameter(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-d")
    assert result.returncode == 0 and result.stderr == ""
    got = result.stdout.splitlines()
    assert len(got) == len(PARAMS)
    assert got == sorted(default_line(p.name, p.default, str(cfdir)) for p in PARAMS)


def test_defaults_ignore_main_cf(cfdir: Path) -> None:
    (cfdir / "main.cf").write_text("broken line\n")
    result = run("-c", str(cfdir), "-d", "relayhost", "myorigin")
    assert result.returncode == 0
    assert result.stdout == "relayhost =\nmyorigin = $myhostname\n"


def test_all_parameters_sorted_and_unexpanded(cfdir: Path) -> None:
    result = run("-c", str(cfdir))
    assert result.returncode == 0
    got = result.stdout.splitlines()
    assert got == sorted(got)
    assert len(got) == len(PARAMS) + 1                      # + my_custom
    assert "myorigin = $myhostname" in got
    assert "mynetworks = 127.0.0.0/8 10.0.0.0/8 192.168.0.0/16" in got
    assert "relayhost =" in got
    assert "smtpd_banner = $myhostname ESMTP $mail_name" in got
    assert f"config_directory = {cfdir}" in got
    assert "mydomain = example.org" in got
    assert result.stderr == f"postconf: warning: {cfdir}/main.cf, line 11: unused parameter: my_custom=hello\n"


def test_explicit_only(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-n")
    assert result.stdout.splitlines() == [
        "my_custom = hello",
        "myhostname = mx.example.org",
        "mynetworks = 127.0.0.0/8 10.0.0.0/8 192.168.0.0/16",
        "myorigin = $myhostname",
        "relayhost =",
    ]


def test_expand(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-x", "myorigin", "smtpd_banner", "mydestination")
    assert result.stdout.splitlines() == [
        "myorigin = mx.example.org",
        "smtpd_banner = mx.example.org ESMTP postpy",
        "mydestination = mx.example.org, localhost.example.org, localhost",
    ]
    nx = run("-c", str(cfdir), "-nx")
    assert "myorigin = mx.example.org" in nx.stdout.splitlines()


def test_names_in_given_order_values_and_names_only(cfdir: Path) -> None:
    assert run("-c", str(cfdir), "relayhost", "myorigin").stdout == "relayhost =\nmyorigin = $myhostname\n"
    assert run("-c", str(cfdir), "-h", "myhostname", "relayhost").stdout == "mx.example.org\n\n"
    assert run("-c", str(cfdir), "-hx", "myorigin").stdout == "mx.example.org\n"
    assert run("-c", str(cfdir), "-H", "myorigin", "relayhost").stdout == "myorigin\nrelayhost\n"
    names = run("-c", str(cfdir), "-nH").stdout.splitlines()
    assert names == ["my_custom", "myhostname", "mynetworks", "myorigin", "relayhost"]
    assert run("-c", str(cfdir), "-n", "myorigin", "max_use").stdout == "myorigin = $myhostname\n"


def test_unknown_name(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "nosuch", "myhostname")
    assert result.returncode == 0
    assert result.stdout == "myhostname = mx.example.org\n"
    assert "postconf: warning: nosuch: unknown parameter\n" in result.stderr
    # As Postfix: a warning, never a failure (scripts run `postconf -h name`).
    for args in (["nosuch"], ["-h", "nosuch"], ["-n", "nosuch"], ["-d", "-h", "nosuch"]):
        only = run("-c", str(cfdir), *args)
        assert only.returncode == 0 and only.stdout == "", (args, only)
        assert only.stderr.endswith("postconf: warning: nosuch: unknown parameter\n"), args


def test_override(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-o", "myhostname=other.example", "-o", "relayhost = [smart]", "-x",
                 "myorigin", "relayhost")
    assert result.stdout == "myorigin = other.example\nrelayhost = [smart]\n"
    assert (cfdir / "main.cf").read_text() == MAIN_CF


def test_config_dir_from_environment(cfdir: Path, tmp_path: Path) -> None:
    assert run("-h", "myhostname", env_config=str(cfdir)).stdout == "mx.example.org\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.cf").write_text("myhostname = other.example\n")
    assert run("-c", str(other), "-h", "myhostname", env_config=str(cfdir)).stdout == "other.example\n"


def test_missing_main_cf_is_all_defaults(tmp_path: Path) -> None:
    result = run("-c", str(tmp_path), "-n")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


@pytest.mark.parametrize("text, line, message", [
    ("a = 1\nfoo\n", 2, "missing '=' after attribute name: \"foo\""),
    ("  x = 1\n", 1, "logical line must not start with whitespace"),
    ("# c\n\nbad name = 1\n", 3, "bad parameter name: \"bad name\""),
])
def test_malformed_main_cf(cfdir: Path, text: str, line: int, message: str) -> None:
    (cfdir / "main.cf").write_text(text)
    result = run("-c", str(cfdir))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"postconf: fatal: {cfdir}/main.cf, line {line}: {message}\n"


def test_expansion_loop(cfdir: Path) -> None:
    (cfdir / "main.cf").write_text("myorigin = $relayhost\nrelayhost = ${myorigin}\n")
    assert run("-c", str(cfdir), "myorigin").returncode == 0           # not expanded: no loop seen
    result = run("-c", str(cfdir), "-x", "myorigin")
    assert result.returncode == 1
    assert result.stderr == ("postconf: fatal: parameter myorigin: recursion loop in expansion: "
                             "myorigin -> relayhost -> myorigin\n")


@pytest.mark.parametrize("args", [
    ["-z"], ["-c"], ["-d", "-n"], ["-e", "-X", "a"], ["-e"], ["-X"], ["-o", "novalue"],
    ["-e", "novalue"], ["a=1", "b"], ["-e", "bad name=1"], ["-X", "a=b"], ["-M", "-m"],
])
def test_usage_errors(cfdir: Path, args: list[str]) -> None:
    result = run("-c", str(cfdir), *args)
    assert result.returncode == 64, result
    assert result.stderr.startswith("postconf: fatal: ") and "usage: postconf" in result.stderr
    assert (cfdir / "main.cf").read_text() == MAIN_CF


def test_table_types_and_locks() -> None:
    result = run("-m")
    assert result.returncode == 0 and result.stdout.splitlines() == list(TABLE_TYPES)
    assert {"lmdb", "hash", "btree", "inline", "static", "texthash", "unix"} == set(TABLE_TYPES)
    assert run("-l").stdout.splitlines() == ["flock", "fcntl", "dotlock"]


# -- master.cf ------------------------------------------------------------------

def test_master_services(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-M")
    assert result.returncode == 0
    # Postfix's columns; a long service name pushes the rest right until they catch up.
    assert result.stdout.splitlines() == [
        "127.0.0.1:2525 inet n    -       n       -       -       smtpd",
        "pickup     unix  n       -       n       60      1       pickup",
        "submission inet  n       -       n       -       -       smtpd -o syslog_name=postpy/submission "
        "-o smtpd_tls_security_level=encrypt",
        "cleanup    unix  -       -       n       -       0       cleanup",
    ]


def test_master_selected_services(cfdir: Path) -> None:
    assert run("-c", str(cfdir), "-M", "pickup/unix", "cleanup").stdout.splitlines() == [
        "pickup     unix  n       -       n       60      1       pickup",
        "cleanup    unix  -       -       n       -       0       cleanup"]
    result = run("-c", str(cfdir), "-M", "pickup/inet", "nosuch")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == ('postconf: warning: unmatched request: "pickup/inet"\n'
                             'postconf: warning: unmatched request: "nosuch"\n')


@pytest.mark.skipif(not Path("/usr/sbin/postconf").exists(), reason="Postfix's postconf is not installed")
def test_master_columns_match_postfix(cfdir: Path) -> None:
    """The same master.cf printed by Postfix's postconf -M and ours, byte for byte."""
    (cfdir / "master.cf").write_text(
        "smtp      inet  n       -       y       -       -       smtpd\n"
        "verylongservicename12345 unix - - n - 0 cleanup\n"
        "relay unix - - n - - smtp\n  -o syslog_name=postfix/$service_name\n"
        "x unix - - n 1000? 100 pipe flags=F user=nobody argv=/bin/cat ${recipient}\n")
    ours = run("-c", str(cfdir), "-M")
    theirs = subprocess.run(["/usr/sbin/postconf", "-c", str(cfdir), "-M"], capture_output=True,
                            text=True, timeout=30)
    assert ours.returncode == theirs.returncode == 0, theirs.stderr
    assert ours.stdout == theirs.stdout


def test_master_errors(cfdir: Path) -> None:
    (cfdir / "master.cf").write_text("# x\npickup unix n - n 60 1 pickup\npickup unix - - n - - x\n")
    result = run("-c", str(cfdir), "-M")
    assert result.returncode == 1
    assert result.stderr == f"postconf: fatal: {cfdir}/master.cf, line 3: duplicate service pickup/unix\n"
    (cfdir / "master.cf").unlink()
    result = run("-c", str(cfdir), "-M")
    assert result.returncode == 1 and f"open {cfdir}/master.cf" in result.stderr


# -- editing ----------------------------------------------------------------------

EDITS = [
    ("a = 1\n", {"a": "2"}, (), "a = 2\n"),
    ("a = 1\n", {"b": "2"}, (), "a = 1\nb = 2\n"),
    ("a = 1", {"b": "2"}, (), "a = 1\nb = 2\n"),
    ("", {"b": "2"}, (), "b = 2\n"),
    ("# c\na = 1\n  more\n# kept\n  more2\nb = 3\n", {"a": "x"}, (), "# c\na = x\n# kept\nb = 3\n"),
    ("a = 1\na = 2\n  cont\nb = 3\n", {"a": "9"}, (), "a = 9\nb = 3\n"),
    ("a = 1\nb = 2\n  c\n# keep\n", {}, {"b"}, "a = 1\n# keep\n"),
    ("a = 1\nb = 2\n", {}, {"nosuch"}, "a = 1\nb = 2\n"),
    ("ab = 1\na = 2\n", {"a": "3"}, (), "ab = 1\na = 3\n"),
    ("a=1\n", {"a": ""}, (), "a =\n"),
    ("  stray\na = 1\n", {"a": "2"}, (), "  stray\na = 2\n"),
    ("no equals here\na = 1\n", {"no": "x"}, (), "no equals here\na = 1\nno = x\n"),
    ("a = 1\r\nb = 2\r\n", {"a": "3"}, (), "a = 3\nb = 2\r\n"),
    ("#a = 1\na = 2\n", {"a": "3"}, (), "#a = 1\na = 3\n"),
]


@pytest.mark.parametrize("text, updates, removals, expected", EDITS)
def test_edit_text(text: str, updates: dict[str, str], removals: set[str], expected: str) -> None:
    assert edit_text(text, updates, removals) == expected


def test_edit_keeps_comments_and_replaces_continuations(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-e", "mynetworks = 10.1.0.0/16", "new_param=value with  spaces ",
                 "myhostname=mx2.example.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (cfdir / "main.cf").read_text() == """\
# main.cf for a test
#   indented comment

myhostname = mx2.example.org
myorigin = $myhostname
mynetworks = 10.1.0.0/16
# a comment inside a continued setting
relayhost =
my_custom = hello
new_param = value with  spaces
"""
    assert run("-c", str(cfdir), "-hx", "myorigin").stdout == "mx2.example.org\n"


def test_edit_implied_without_e(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "relayhost=[smart.example]:587", "mail_name = Test")
    assert result.returncode == 0, result.stderr
    assert run("-c", str(cfdir), "relayhost", "mail_name").stdout == (
        "relayhost = [smart.example]:587\nmail_name = Test\n")
    text = (cfdir / "main.cf").read_text()
    assert text.startswith("# main.cf for a test\n") and text.endswith("mail_name = Test\n")


def test_remove(cfdir: Path) -> None:
    result = run("-c", str(cfdir), "-X", "mynetworks", "my_custom", "nosuch")
    assert result.returncode == 0, result.stderr
    text = (cfdir / "main.cf").read_text()
    assert "mynetworks" not in text and "10.0.0.0/8" not in text and "my_custom" not in text
    assert "# a comment inside a continued setting\n" in text
    assert [s.name for s in parse_main_cf(text)] == ["myhostname", "myorigin", "relayhost"]


def test_edit_is_a_rename_keeping_mode(cfdir: Path) -> None:
    main = cfdir / "main.cf"
    main.chmod(0o640)
    inode = main.stat().st_ino
    assert run("-c", str(cfdir), "-e", "relayhost=x").returncode == 0
    assert main.stat().st_ino != inode                       # a new file took the name
    assert stat.S_IMODE(main.stat().st_mode) == 0o640
    assert sorted(os.listdir(cfdir)) == ["main.cf", "master.cf"]   # no temporary left


def test_edit_creates_main_cf(tmp_path: Path) -> None:
    assert run("-c", str(tmp_path), "-e", "myhostname=new.example").returncode == 0
    main = tmp_path / "main.cf"
    assert main.read_text() == "myhostname = new.example\n"
    assert stat.S_IMODE(main.stat().st_mode) == 0o644


def test_edit_through_symlink_edits_the_target(cfdir: Path, tmp_path: Path) -> None:
    real = tmp_path / "real-main.cf"
    real.write_text("a = 1\n")
    (cfdir / "main.cf").unlink()
    (cfdir / "main.cf").symlink_to(real)
    assert run("-c", str(cfdir), "-e", "a=2").returncode == 0
    assert (cfdir / "main.cf").is_symlink() and real.read_text() == "a = 2\n"


def test_edit_missing_directory(tmp_path: Path) -> None:
    result = run("-c", str(tmp_path / "nope"), "-e", "a=1")
    assert result.returncode == 1 and result.stderr.startswith("postconf: fatal: open ")


def test_concurrent_edits_lose_nothing(cfdir: Path) -> None:
    procs = [subprocess.Popen([str(BIN / "postconf"), "-c", str(cfdir), "-e", f"param_{i} = value_{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(12)]
    for proc in procs:
        assert proc.wait(60) == 0
    settings = {s.name: s.value for s in parse_main_cf((cfdir / "main.cf").read_text())}
    assert all(settings[f"param_{i}"] == f"value_{i}" for i in range(12))
    assert settings["myhostname"] == "mx.example.org"


def test_readers_never_see_a_partial_file(cfdir: Path) -> None:
    """While postconf -e rewrites a large main.cf, every read is a whole file."""
    body = "".join(f"# filler comment line {i:06d} " + "x" * 60 + "\n" for i in range(4000))
    (cfdir / "main.cf").write_text(MAIN_CF + body + "last_line = end\n")
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            text = (cfdir / "main.cf").read_text()
            reads[0] += 1
            if not text.endswith("\n") or "last_line = end\n" not in text or "myorigin = $myhostname\n" not in text:
                failures.append(f"partial read of {len(text)} bytes")
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(15):
            result = run("-c", str(cfdir), "-e", f"counter = {i}")
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        thread.join(30)
    assert not failures, failures
    assert reads[0] > 0
    assert re.search(r"^counter = 14$", (cfdir / "main.cf").read_text(), re.M)
