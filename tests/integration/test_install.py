"""`make install` on a throwaway tree, driven the way a host drives it.

The module installs once (PREFIX, SYSCONFDIR, SPOOLDIR, INITDIR, UNITDIR and
ALIASES all under one temporary directory, so the host's own files, among
them Debian Postfix's /usr/sbin/sendmail, are never touched), points the
installed main.cf and master.cf at a free loopback port with the installed
`postconf -e`, installs again to show that edited configuration is kept,
then: the installed init script is run as an init system runs it (an empty
environment), s-nail from Debian submits through the installed sendmail and
the message lands in a real user's Maildir, `systemd-analyze verify` checks
the unit, and `make uninstall` takes back exactly what install wrote.

Another mail system's files: before installing, a foreign file sits where
the installed sendmail goes (it must be set aside as sendmail.pre-postpy and
come back at uninstall) and, where dpkg-deb exists, a stand-in Debian
package owns the places of postfix, postcat, mailq and newaliases (install
must dpkg-divert them; uninstall must remove the diversions).  Having set
aside a `postfix` command, install takes Postfix's place: `postfix` runs
postpy, and the main.cf it creates logs as Postfix (syslog_name = postfix).  The package is removed and any
diversion dropped when the module ends, whatever happened.

Install runs pip for real (`pip install --target` of the checkout and its
dependencies from the package index, usually from pip's cache): no copying
from the test venv, so what is tested is what a host gets.  It takes a few
seconds; the whole module stays well under a minute.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import IS_ROOT, ROOT, free_port, wait_for

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="make install needs root (users, ownership, dpkg-divert)"),
    pytest.mark.timeout(240),
]

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TEST_PACKAGE = "postpy-install-test"


@dataclass
class Installed:
    base: Path
    port: int
    make_output: list[str] = field(default_factory=list)
    diverted: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> Path:
        return self.base / "usr"

    @property
    def config_dir(self) -> Path:
        return self.base / "etc" / "postpy"

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def init_script(self) -> Path:
        return self.base / "init.d" / "postpy"

    @property
    def unit(self) -> Path:
        return self.base / "systemd" / "postpy.service"

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    @property
    def manifest(self) -> Path:
        return self.prefix / "lib" / "postpy.INSTALLED"

    def make_vars(self) -> list[str]:
        return [f"PREFIX={self.prefix}", f"SYSCONFDIR={self.config_dir}", f"SPOOLDIR={self.spool}",
                f"INITDIR={self.base / 'init.d'}", f"UNITDIR={self.base / 'systemd'}",
                f"ALIASES={self.base / 'etc' / 'aliases'}"]

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MAIL_CONFIG", "MAKEFLAGS", "MFLAGS")}
        out = subprocess.run(["make", "-s", "-C", str(ROOT), target, *self.make_vars()], env=env,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, f"make {target} failed:\n{out.stdout}\n{out.stderr}"
        return out

    def command(self, *argv: str | Path, input: str | None = None, user: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run with an empty environment but PATH (and ``env``), as an init system or cron would."""
        full_env = {"PATH": SYSTEM_PATH, **(env or {})}
        ids: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                              env=full_env, timeout=timeout, **ids)  # type: ignore[call-overload]

    def init(self, action: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.command(self.init_script, action, env=env)

    def master_pid(self, spool: Path | None = None) -> int | None:
        try:
            return int(((spool or self.spool) / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""


def file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def build_stand_in_package(inst: Installed, package: str = TEST_PACKAGE) -> Path:
    """A tiny .deb that owns the throwaway tree's postfix, postcat, bin/mailq and bin/newaliases,
    as Postfix owns /usr's; its newaliases link is the one install makes (like /usr/lib/sendmail)."""
    root = inst.base / "deb"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1\nArchitecture: all\n"
        "Maintainer: postpy tests <root@localhost>\n"
        "Description: stands in for another MTA in postpy's install test\n")
    sbin = root / str(inst.prefix).lstrip("/") / "sbin"
    bindir = root / str(inst.prefix).lstrip("/") / "bin"
    sbin.mkdir(parents=True)
    bindir.mkdir(parents=True)
    (sbin / "postcat").write_text("#!/bin/sh\necho packaged postcat\n")
    (sbin / "postcat").chmod(0o755)
    (sbin / "postfix").write_text("#!/bin/sh\necho packaged postfix\n")
    (sbin / "postfix").chmod(0o755)
    (bindir / "mailq").symlink_to("../sbin/postcat")
    (bindir / "newaliases").symlink_to("../sbin/newaliases")
    deb = inst.base / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)],
                   check=True, capture_output=True, timeout=60)
    shutil.rmtree(root)
    return deb


def drop_stand_in_package(inst: Installed, package: str = TEST_PACKAGE) -> None:
    if not shutil.which("dpkg-divert"):
        return
    listed = subprocess.run(["dpkg-divert", "--list", f"{inst.base}/*"], capture_output=True, text=True)
    for match in re.finditer(r"^local diversion of (\S+) to (\S+)$", listed.stdout, re.M):
        subprocess.run(["dpkg-divert", "--local", "--rename", "--divert", match.group(2), "--remove",
                        match.group(1)], capture_output=True)
    subprocess.run(["dpkg", "--purge", package], capture_output=True, timeout=60)


def edit_configuration(inst: Installed) -> None:
    """Loopback port, log file, Maildir, test domain: with the installed postconf."""
    postconf = inst.prefix / "sbin" / "postconf"
    out = inst.command(postconf, "-e", f"maillog_file = {inst.maillog}", "home_mailbox = Maildir/",
                       "myhostname = mx.test.example", "mydestination = $myhostname, localhost",
                       "inet_interfaces = 127.0.0.1", "mynetworks = 127.0.0.0/8",
                       "service_throttle_time = 5s")
    assert out.returncode == 0, out.stderr
    master_cf = inst.config_dir / "master.cf"
    assert not re.search(r"127\.0\.0\.1:(2525|2587|2465)\s", master_cf.read_text()), "checkout ports left"
    text, count = re.subn(r"^25\s+inet", f"127.0.0.1:{inst.port} inet", master_cf.read_text(), flags=re.M)
    assert count == 1, "the installed master.cf has one smtpd service on port 25"
    master_cf.write_text(text)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    before = file_digest("/usr/sbin/sendmail")
    base = Path(tempfile.mkdtemp(prefix="postpy-install-"))
    base.chmod(0o755)     # the daemons (as postpy) and test users must reach the tree
    inst = Installed(base, free_port())
    foreign = inst.prefix / "sbin" / "sendmail"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho foreign sendmail\n")
    foreign.chmod(0o755)
    try:
        if shutil.which("dpkg-deb") and shutil.which("dpkg-divert"):
            drop_stand_in_package(inst)
            deb = build_stand_in_package(inst)
            subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True, timeout=60)
            inst.diverted = [str(inst.prefix / "sbin" / "postcat"), str(inst.prefix / "bin" / "mailq"),
                             str(inst.prefix / "bin" / "newaliases"), str(inst.prefix / "sbin" / "postfix")]
        first = inst.make("install")
        edit_configuration(inst)
        again = inst.make("install")      # a second install keeps the edited configuration
        inst.make_output = (first.stdout + first.stderr + again.stdout + again.stderr).splitlines()
        yield inst
    finally:
        if inst.init_script.exists():
            inst.init("stop")
        pid = inst.master_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if inst.manifest.exists():
            subprocess.run(["make", "-s", "-C", str(ROOT), "uninstall", *inst.make_vars()],
                           capture_output=True, timeout=120)
        drop_stand_in_package(inst)
        shutil.rmtree(base, ignore_errors=True)
        assert file_digest("/usr/sbin/sendmail") == before, "the host's /usr/sbin/sendmail changed"


def test_install_layout_and_quiet_output(installed: Installed) -> None:
    inst = installed
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    manifest = inst.manifest.read_text().splitlines()
    for name in scripts:
        launcher = inst.prefix / "sbin" / name
        assert os.access(launcher, os.X_OK), launcher
        assert str(launcher) in manifest
        assert f"MAIL_CONFIG\", '{inst.config_dir}'" in launcher.read_text()
    for name in ("mailq", "newaliases"):
        assert os.readlink(inst.prefix / "bin" / name) == f"../sbin/{name}"
    for daemon in (p.name for p in (ROOT / "libexec").iterdir() if p.is_file()):
        assert os.access(inst.prefix / "libexec" / "postpy" / daemon, os.X_OK), daemon
    assert (inst.prefix / "lib" / "postpy" / "postpy" / "__init__.py").exists()
    assert re.search(r"@[A-Z]+@", inst.init_script.read_text()) is None
    assert f"MAIL_CONFIG={inst.config_dir}" in inst.init_script.read_text()
    # Nothing from `postpy check` or newaliases when all is fine (pip's own notices aside).
    noisy = [ln for ln in inst.make_output if "postpy" in ln and ("warning" in ln or "error" in ln)]
    assert noisy == []
    # The kept configuration: the edits between the two installs survived.
    shown = inst.command(inst.prefix / "sbin" / "postconf", "-n").stdout
    for setting in (f"queue_directory = {inst.spool}", "mail_owner = postpy", "home_mailbox = Maildir/",
                    f"alias_maps = lmdb:{inst.base}/etc/aliases", f"maillog_file = {inst.maillog}",
                    f"daemon_directory = {inst.prefix}/libexec/postpy"):
        assert setting in shown.splitlines(), shown
    assert f"127.0.0.1:{inst.port} inet" in (inst.config_dir / "master.cf").read_text()
    assert (inst.base / "etc" / "aliases.lmdb").exists()      # newaliases ran
    assert (inst.spool / "maildrop").is_dir()                 # postpy check built the queue


def test_foreign_files_are_set_aside(installed: Installed) -> None:
    inst = installed
    sendmail = inst.prefix / "sbin" / "sendmail"
    assert "postpy launcher" in sendmail.read_text()
    assert "foreign sendmail" in (inst.prefix / "sbin" / "sendmail.pre-postpy").read_text()
    if not inst.diverted:
        pytest.skip("no dpkg-deb/dpkg-divert: the Debian diversion part is not exercised")
    listed = subprocess.run(["dpkg-divert", "--list", f"{inst.base}/*"], capture_output=True, text=True).stdout
    for path in inst.diverted:
        assert f"local diversion of {path} to {path}.pre-postpy" in listed
    assert "packaged postcat" in (inst.prefix / "sbin" / "postcat.pre-postpy").read_text()
    assert "postpy launcher" in (inst.prefix / "sbin" / "postcat").read_text()
    # Postfix's control command runs postpy's, and postpy logs as Postfix did.
    assert "packaged postfix" in (inst.prefix / "sbin" / "postfix.pre-postpy").read_text()
    assert os.readlink(inst.prefix / "sbin" / "postfix") == "postpy"
    assert "syslog_name = postfix" in inst.command(inst.prefix / "sbin" / "postconf", "-n").stdout.splitlines()
    assert "-o syslog_name=postfix/submission" in (inst.config_dir / "master.cf").read_text()
    out = inst.command(inst.prefix / "sbin" / "postfix", "-c", inst.config_dir, "status")
    assert out.returncode == 1 and "mail system is not running" in out.stderr, out.stderr


def test_init_script_lifecycle(installed: Installed) -> None:
    inst = installed
    assert inst.init("status").returncode == 3
    assert inst.init("reload").returncode == 7
    assert inst.init("stop").returncode == 0                   # stopping a stopped system succeeds
    try:
        assert inst.init("start").returncode == 0
        first = wait_for(inst.master_pid, 10, "master.pid")
        assert inst.init("status").returncode == 0
        assert inst.init("start").returncode == 0              # starting a running system succeeds
        with socket.create_connection(("127.0.0.1", inst.port), timeout=10) as conn:
            assert conn.makefile("rb").readline().startswith(b"220 mx.test.example ")
        for action in ("reload", "force-reload"):
            count = inst.log().count("reload -- version")
            out = inst.init(action)
            assert out.returncode == 0, out.stderr
            wait_for(lambda c=count: inst.log().count("reload -- version") > c, 10, f"{action} in the log")
        out = inst.init("restart")
        assert out.returncode == 0, out.stderr
        second = inst.master_pid()
        assert second and second != first
        assert inst.init("status").returncode == 0
    finally:
        assert inst.init("stop").returncode == 0
    assert inst.master_pid() is None or not pid_alive(inst.master_pid())
    assert inst.init("status").returncode == 3
    assert inst.init("force-reload").returncode == 7
    assert inst.init("bogus").returncode == 2


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_init_script_reads_defaults_file(installed: Installed) -> None:
    """MAIL_CONFIG from an /etc/default/postpy-like file (POSTPY_DEFAULTS) picks another system."""
    inst = installed
    alt = inst.base / "etc" / "postpy-alt"
    alt_spool = inst.base / "spool-alt"
    alt.mkdir()
    main_cf = (inst.config_dir / "main.cf").read_text()
    (alt / "main.cf").write_text(main_cf + f"queue_directory = {alt_spool}\n")
    (alt / "master.cf").write_text((inst.config_dir / "master.cf").read_text()
                                   .replace(f"127.0.0.1:{inst.port} ", f"127.0.0.1:{free_port()} "))
    defaults = inst.base / "default-postpy"
    defaults.write_text(f"# as /etc/default/postpy\nMAIL_CONFIG={alt}\n")
    env = {"POSTPY_DEFAULTS": str(defaults)}
    try:
        out = inst.init("start", **env)
        assert out.returncode == 0, out.stderr
        assert inst.master_pid(alt_spool)
        assert inst.init("status", **env).returncode == 0
        assert inst.init("status").returncode == 3       # the installed default config is not running
    finally:
        assert inst.init("stop", **env).returncode == 0
    assert inst.init("status", **env).returncode == 3


def maildir_files(home: Path) -> list[Path]:
    new = home / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_mua_sends_through_installed_sendmail(installed: Installed, unix_users) -> None:
    inst = installed
    mua = shutil.which("s-nail")
    if not mua:
        pytest.skip("s-nail is not installed (scripts/test-deps installs it)")
    user = unix_users()
    home = Path(user.pw_dir)
    assert inst.init("start").returncode == 0
    try:
        out = inst.command(mua, f"-Smta={inst.prefix}/sbin/sendmail", "-s", "installed postpy says hello",
                           f"{user.pw_name}@mx.test.example", input="a body line\nand another\n",
                           user=user.pw_name, env={"HOME": str(home), "USER": user.pw_name})
        assert out.returncode == 0, out.stderr
        files = wait_for(lambda: maildir_files(home), 20, "the message in the user's Maildir")
        assert isinstance(files, list) and len(files) == 1
        message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
        assert message["Subject"] == "installed postpy says hello"
        assert message["To"] == f"{user.pw_name}@mx.test.example"
        assert message["Delivered-To"] == f"{user.pw_name}@mx.test.example"
        assert message.get_content() == "a body line\nand another\n"
        assert f"uid={user.pw_uid} from=<{user.pw_name}>" in inst.log()
        # mailq through the bin/ link: the queue is empty once the message is delivered.
        mailq = inst.prefix / "bin" / "mailq"
        wait_for(lambda: "Mail queue is empty" in inst.command(mailq).stdout, 10, "an empty queue")
    finally:
        assert inst.init("stop").returncode == 0


def test_unit_verifies(installed: Installed) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = installed.unit.read_text()
    assert re.search(r"@[A-Z]+@", text) is None, text
    assert f"ExecStart={installed.prefix}/sbin/postpy -c {installed.config_dir} start-fg" in text
    out = subprocess.run(["systemd-analyze", "verify", str(installed.unit)], capture_output=True, text=True,
                         timeout=60)
    ours = [ln for ln in (out.stdout + out.stderr).splitlines() if "postpy" in ln]
    assert out.returncode == 0 and ours == [], out.stdout + out.stderr


def test_uninstall_keeps_configuration_and_queue(installed: Installed) -> None:
    """Last in the module: takes back what install wrote, restores what it set aside."""
    inst = installed
    out = inst.make("uninstall")
    assert "restored" in out.stdout
    assert not inst.manifest.exists()
    assert not (inst.prefix / "lib" / "postpy").exists()
    assert not (inst.prefix / "libexec" / "postpy").exists()
    assert not inst.init_script.exists() and not inst.unit.exists()
    for name in ("postpy", "postconf", "postqueue", "mailq"):
        assert not (inst.prefix / "sbin" / name).exists(), name
    assert (inst.prefix / "sbin" / "sendmail").read_text() == "#!/bin/sh\necho foreign sendmail\n"
    assert not (inst.prefix / "sbin" / "sendmail.pre-postpy").exists()
    if inst.diverted:
        listed = subprocess.run(["dpkg-divert", "--list", f"{inst.base}/*"], capture_output=True,
                                text=True).stdout
        assert listed.strip() == ""
        assert "packaged postcat" in (inst.prefix / "sbin" / "postcat").read_text()
        assert "packaged postfix" in (inst.prefix / "sbin" / "postfix").read_text()
        assert os.readlink(inst.prefix / "bin" / "mailq") == "../sbin/postcat"
        assert os.readlink(inst.prefix / "bin" / "newaliases") == "../sbin/newaliases"   # the package's
    else:
        assert not os.path.lexists(inst.prefix / "bin" / "newaliases")
        assert not os.path.lexists(inst.prefix / "sbin" / "postfix")
    for kept in (inst.config_dir / "main.cf", inst.config_dir / "master.cf", inst.base / "etc" / "aliases",
                 inst.spool / "maildrop", inst.spool / "incoming"):
        assert kept.exists(), kept
    assert f"127.0.0.1:{inst.port} inet" in (inst.config_dir / "master.cf").read_text()
