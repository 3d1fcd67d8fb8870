"""`make install DESTDIR=...`: a staged tree for packaging, the host untouched.

The module stages one install with the paths a distribution package uses
(PREFIX=/usr, SYSCONFDIR=/etc/postpy, ...) under a temporary DESTDIR, then
checks that every file landed under DESTDIR and is listed in the manifest,
that what was written names the final paths (/usr/..., /etc/postpy), never
DESTDIR, that the staged library works, and that nothing outside DESTDIR
changed: the host's /usr/sbin/sendmail (Debian's Postfix here) keeps its
content, no /etc/postpy or /usr/lib/postpy appears, no diversion is added.
`make uninstall DESTDIR=...` then takes the staged files back.

Install runs pip for real (`pip install --target`, usually from pip's cache),
as in test_install.py; the module takes a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import IS_ROOT, ROOT

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="make install with PREFIX=/usr is run as root, as a "
                                           "package build's install step is (fakeroot aside)"),
    pytest.mark.timeout(240),
]

FINAL = {"PREFIX": "/usr", "SYSCONFDIR": "/etc/postpy", "SPOOLDIR": "/var/spool/postpy",
         "INITDIR": "/etc/init.d", "UNITDIR": "/lib/systemd/system", "ALIASES": "/etc/aliases"}
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
DAEMONS = sorted(p.name for p in (ROOT / "libexec").iterdir() if p.is_file())

# Host paths an install without DESTDIR would write or set aside.
HOST_PATHS = sorted({
    "/usr/lib/sendmail", "/usr/lib/postpy", "/usr/lib/postpy.INSTALLED", "/usr/libexec/postpy",
    "/usr/share/doc/postpy", "/etc/postpy", "/etc/init.d/postpy", "/lib/systemd/system/postpy.service",
    "/var/spool/postpy", "/etc/aliases", "/etc/aliases.lmdb", "/usr/bin/mailq", "/usr/bin/newaliases",
    "/usr/sbin/postfix", "/usr/sbin/postfix.pre-postpy",     # Debian's Postfix here: never diverted
    *(f"/usr/sbin/{name}" for name in SCRIPTS),
    *(f"/usr/sbin/{name}.pre-postpy" for name in SCRIPTS),
    "/usr/bin/mailq.pre-postpy", "/usr/bin/newaliases.pre-postpy", "/usr/lib/sendmail.pre-postpy",
})


def path_state(path: str) -> str:
    """What is at ``path``: absent, a link and its target, a file's digest, or a directory."""
    if not os.path.lexists(path):
        return "absent"
    if os.path.islink(path):
        return f"link -> {os.readlink(path)}"
    if os.path.isdir(path):
        return f"directory {sorted(os.listdir(path))}"
    return "file " + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def host_state() -> dict[str, str]:
    state = {path: path_state(path) for path in HOST_PATHS}
    if shutil.which("dpkg-divert"):
        state["dpkg-divert --list"] = subprocess.run(["dpkg-divert", "--list"], capture_output=True,
                                                     text=True, timeout=30).stdout
    return state


@dataclass
class Staged:
    destdir: Path
    host_before: dict[str, str]
    output: str

    def staged(self, path: str) -> Path:
        return Path(str(self.destdir) + path)

    @property
    def manifest(self) -> list[str]:
        return self.staged("/usr/lib/postpy.INSTALLED").read_text().splitlines()


def make(target: str, destdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAIL_CONFIG", "MAKEFLAGS", "MFLAGS")}
    args = [f"DESTDIR={destdir}", *(f"{k}={v}" for k, v in FINAL.items())]
    done = subprocess.run(["make", "-s", "-C", str(ROOT), target, *args], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"make {target} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def staged() -> Iterator[Staged]:
    before = host_state()
    destdir = Path(tempfile.mkdtemp(prefix="postpy-stage-"))
    try:
        done = make("install", destdir)
        yield Staged(destdir, before, done.stdout + done.stderr)
    finally:
        shutil.rmtree(destdir, ignore_errors=True)
    assert host_state() == before, "make install/uninstall with DESTDIR changed the host"


def staged_files(root: Path) -> set[str]:
    """Final paths of the files and links under ``root`` (directories left out)."""
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            found.add("/" + os.path.relpath(os.path.join(directory, name), root))
    return found


def test_nothing_written_outside_destdir(staged: Staged) -> None:
    assert host_state() == staged.host_before
    assert "set aside" not in staged.output and "diverted" not in staged.output


def test_manifest_lists_final_paths_of_every_staged_file(staged: Staged) -> None:
    manifest = staged.manifest
    assert manifest, "empty manifest"
    for line in manifest:
        assert "\t" not in line, f"a set-aside entry in a staged install: {line!r}"
        assert line.startswith("/") and not line.startswith(str(staged.destdir)), line
        assert os.path.lexists(staged.staged(line.rstrip("/"))), f"{line} listed but not staged"
    expected = {f"/usr/sbin/{name}" for name in SCRIPTS} | {
        f"/usr/libexec/postpy/{name}" for name in DAEMONS} | {
        "/usr/bin/mailq", "/usr/bin/newaliases", "/usr/lib/sendmail", "/usr/sbin/postfix", "/usr/lib/postpy/",
        "/usr/share/doc/postpy/README.md", "/etc/init.d/postpy", "/lib/systemd/system/postpy.service",
        "/usr/lib/postpy.INSTALLED"}
    assert expected <= set(manifest), sorted(expected - set(manifest))
    # Every staged file is listed, except the library tree (listed as a whole),
    # the configuration and the queue, which packages own and uninstall keeps.
    unlisted = {p for p in staged_files(staged.destdir)
                if not p.startswith(("/usr/lib/postpy/", "/etc/postpy/", "/var/spool/postpy/"))}
    assert unlisted == set(manifest) - {"/usr/lib/postpy/"}
    assert sorted(os.listdir(staged.staged("/etc/postpy"))) == ["main.cf", "master.cf"]
    assert staged.staged("/var/spool/postpy").is_dir()
    assert not staged.staged("/etc/aliases").exists()    # the package's postinst makes it


def test_written_files_name_final_paths_not_destdir(staged: Staged) -> None:
    marker = str(staged.destdir)
    for path in sorted(staged_files(staged.destdir)):
        if path.startswith("/usr/lib/postpy/"):
            continue
        target = staged.staged(path)
        if target.is_symlink():
            assert marker not in os.readlink(target), path
        else:
            assert marker not in target.read_text(errors="replace"), f"{path} names DESTDIR"
    for name in SCRIPTS:
        text = staged.staged(f"/usr/sbin/{name}").read_text()
        assert "os.environ.setdefault(\"MAIL_CONFIG\", '/etc/postpy')" in text, text
        assert "sys.path.insert(0, '/usr/lib/postpy')" in text, text
    for name in DAEMONS:
        assert "sys.path.insert(0, '/usr/lib/postpy')" in staged.staged(
            f"/usr/libexec/postpy/{name}").read_text()
    assert os.readlink(staged.staged("/usr/lib/sendmail")) == "../sbin/sendmail"
    assert os.readlink(staged.staged("/usr/bin/mailq")) == "../sbin/mailq"
    assert os.readlink(staged.staged("/usr/sbin/postfix")) == "postpy"     # `postfix reload` in scripts
    main_cf = staged.staged("/etc/postpy/main.cf").read_text().splitlines()
    for setting in ("queue_directory = /var/spool/postpy", "daemon_directory = /usr/libexec/postpy",
                    "mail_owner = postpy", "alias_maps = lmdb:/etc/aliases"):
        assert setting in main_cf, main_cf
    # A package build replaces nothing: the staged configuration keeps postpy's own log tag.
    assert not any(line.startswith("syslog_name") for line in main_cf), main_cf
    assert "syslog_name=postpy/submission" in staged.staged("/etc/postpy/master.cf").read_text()
    assert "MAIL_CONFIG=/etc/postpy" in staged.staged("/etc/init.d/postpy").read_text()
    assert "ExecStart=/usr/sbin/postpy -c /etc/postpy start-fg" in staged.staged(
        "/lib/systemd/system/postpy.service").read_text()


def test_staged_library_is_complete(staged: Staged) -> None:
    """The staged library alone (not the checkout) runs postconf on the staged configuration."""
    lib = staged.staged("/usr/lib/postpy")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import postpy; "
            "assert postpy.__file__.startswith(sys.argv[1]), postpy.__file__; "
            "from postpy.cli.postconf import main; sys.argv = ['postconf', '-n']; sys.exit(main())")
    env = {"PATH": "/usr/bin:/bin", "MAIL_CONFIG": str(staged.staged("/etc/postpy"))}
    done = subprocess.run([sys.executable, "-sP", "-c", code, str(lib)], capture_output=True,
                          text=True, env=env, cwd="/", timeout=30)
    assert done.returncode == 0, done.stderr
    assert "queue_directory = /var/spool/postpy" in done.stdout.splitlines(), done.stdout


def test_uninstall_takes_back_the_staged_files(staged: Staged) -> None:
    """Last: `make uninstall DESTDIR=...` removes what the manifest lists, keeps the configuration."""
    listed = [p for p in staged.manifest if not p.endswith("/")]
    make("uninstall", staged.destdir)
    for path in listed:
        assert not os.path.lexists(staged.staged(path)), path
    assert not staged.staged("/usr/lib/postpy").exists()
    assert staged.staged("/etc/postpy/main.cf").exists()
    assert host_state() == staged.host_before
