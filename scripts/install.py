#!/usr/bin/env python3
"""Install or uninstall postpy on this host (called by `make install` / `make uninstall`).

Layout (every directory can be changed on the make command line):

  $(PREFIX)/lib/postpy/         the postpy package and its dependencies (pip --target)
  $(PREFIX)/sbin/               postpy, sendmail, postconf, postqueue, ... (small Python launchers);
                                postfix, a link to postpy (scripts call `postfix reload`, ...)
  $(PREFIX)/bin/                mailq, newaliases (links to the launchers in sbin)
  $(PREFIX)/libexec/postpy/     the daemons master starts
  $(PREFIX)/share/doc/postpy/   README.md
  $(SYSCONFDIR)                 main.cf, master.cf (existing files are kept)
  $(ALIASES)                    the aliases file (kept; created with postmaster: root if missing,
                                not with DESTDIR)
  $(SPOOLDIR)                   the queue
  $(INITDIR), $(UNITDIR)        the LSB init script and the systemd unit

Launchers run $(INSTALL_PYTHON) with -sP, put $(PREFIX)/lib/postpy first on
sys.path and default MAIL_CONFIG to $(SYSCONFDIR), so every command finds
this installation's configuration without -c.  With PREFIX=/usr,
/usr/sbin/sendmail is postpy's launcher and /usr/lib/sendmail links to it.

Files of another mail system.  A file in the way that install did not
write (Postfix's /usr/sbin/sendmail, /usr/bin/mailq, postconf, ...) is set
aside, never overwritten: when a Debian package owns it, with
`dpkg-divert --local --rename` (so upgrades of that package write beside it,
not over postpy, and removing it leaves postpy's in place), otherwise by
renaming it to NAME.pre-postpy.  Uninstall puts it back.  A packaged symlink
identical to install's (Postfix's /usr/lib/sendmail) is diverted all the same.

Replacing Postfix.  When install sets aside another program's
$(PREFIX)/sbin/postfix, postpy takes Postfix's place on this host, and the
main.cf and master.cf it creates log as Postfix does (``syslog_name =
postfix``; the submission and smtps services as postfix/submission and
postfix/smtps), so that pflogsumm, fail2ban's postfix filters and logwatch
read postpy's log unchanged.  A configuration that exists already is kept
as it is (install says how to change it).

The manifest $(PREFIX)/lib/postpy.INSTALLED lists what install did, in
order: ``/path`` (a file or symlink), ``/path/`` (a tree), ``divert<TAB>/path
<TAB>/aside`` or ``saved<TAB>/path<TAB>/aside``.  Uninstall (refused while
postpy runs) undoes those entries, last first, and keeps the configuration,
the aliases and the queue.  A re-install carries the set-aside entries over
and removes files an older install wrote that this one does not.

pip fetches the dependencies from the package index (or its cache).  DESTDIR
stages the tree elsewhere (packaging): nothing is set aside, no user is
created, newaliases and `postpy check` do not run.  Otherwise install ends
by creating the postpy user and postdrop group (as root), running newaliases
and `postpy check`, which is quiet when all is well.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
BIN_COMMANDS = ("mailq", "newaliases")
MARKER = "written by make install"
ASIDE_SUFFIX = ".pre-postpy"
HOST_PORTS = {"2525": "25", "2587": "587", "2465": "465"}     # checkout port -> installed port
POSTFIX_COMMAND = ("postfix", "postpy")     # Postfix's control command, and postpy's that it runs
POSTFIX_SYSLOG_NAME = "postfix"             # the log tag Postfix's log readers look for

LAUNCHER = """#!{python} -sP
# postpy launcher, {marker}
import os
import sys
os.environ.setdefault("MAIL_CONFIG", {sysconfdir!r})
sys.path.insert(0, {lib!r})
from postpy.util.stdfds import ensure_std_fds
ensure_std_fds()
from {module} import {func}
sys.exit({func}())
"""

# The checkout's launcher (libexec/<daemon>) after its first line is {body}.
DAEMON = """#!{python} -sP
# postpy daemon launcher, {marker}; started by master
import sys
sys.path.insert(0, {lib!r})
{body}"""

MAIN_CF = """\
# postpy main.cf, {marker}; later installs keep this file.
# `postconf -n` shows what is set here, `postconf -d` every parameter and its
# default; `postconf -e 'name = value'` changes one.
queue_directory = {spooldir}
daemon_directory = {prefix}/libexec/postpy
mail_owner = {mail_owner}
setgid_group = postdrop
alias_maps = lmdb:{aliases}
alias_database = lmdb:{aliases}
"""

MAIN_CF_AS_POSTFIX = """\
# This host ran Postfix: log as Postfix does, so that pflogsumm, fail2ban's
# postfix filters and logwatch read postpy's log unchanged.
syslog_name = {syslog_name}
"""


class InstallError(Exception):
    """A step of install or uninstall failed; str() says which and why."""


class Manifest:
    """The entries of $(PREFIX)/lib/postpy.INSTALLED (see the module docstring)."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.lines: list[str] = list(lines or [])

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls([ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else [])

    def paths(self) -> list[str]:
        return [ln for ln in self.lines if "\t" not in ln]

    def asides(self) -> dict[str, tuple[str, str]]:
        """path -> (kind, aside) for the set-aside entries."""
        split = (ln.split("\t") for ln in self.lines if "\t" in ln)
        return {path: (kind, aside) for kind, path, aside in split}


def dpkg_owner(path: str) -> str | None:
    """The Debian package that ships ``path``, or None (also without dpkg)."""
    if not shutil.which("dpkg-query"):
        return None
    out = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        package, sep, owned = line.partition(": ")
        if sep and owned == path and not package.startswith("diversion by"):
            return package
    return None


def set_aside(path: str) -> tuple[str, str]:
    """Move a foreign file out of the way; returns the manifest (kind, aside)."""
    aside = path + ASIDE_SUFFIX
    if os.path.lexists(aside):
        raise InstallError(f"{path} belongs to another program and {aside} already exists: "
                           "move one of them away first")
    package = dpkg_owner(path)
    if package:
        out = subprocess.run(["dpkg-divert", "--local", "--rename", "--divert", aside, "--add", path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise InstallError(f"dpkg-divert {path}: {out.stderr.strip() or out.stdout.strip()}")
        print(f"install: {path} of package {package} diverted to {aside}")
        return "divert", aside
    os.rename(path, aside)
    print(f"install: {path} set aside as {aside}")
    return "saved", aside


def leftover_aside(path: str) -> tuple[str, str] | None:
    """(kind, aside) when a foreign ``path`` was already set aside by an interrupted install."""
    aside = path + ASIDE_SUFFIX
    if shutil.which("dpkg-divert"):
        out = subprocess.run(["dpkg-divert", "--truename", path], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == aside:
            return "divert", aside
    return ("saved", aside) if os.path.lexists(aside) else None


def put_back(kind: str, path: str, aside: str) -> None:
    """Undo :func:`set_aside` (the postpy file at ``path`` is already gone)."""
    if kind == "divert":
        out = subprocess.run(["dpkg-divert", "--local", "--rename", "--divert", aside, "--remove", path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"uninstall: dpkg-divert --remove {path}: {out.stderr.strip()}", file=sys.stderr)
    elif os.path.lexists(aside) and not os.path.lexists(path):
        os.rename(aside, path)


def defaults_file(initdir: str) -> str:
    """The init script's settings file: default/postpy beside its init.d directory."""
    return os.path.join(os.path.dirname(initdir) or "/", "default", "postpy")


class Installer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.destdir = args.destdir or ""
        self.prefix = args.prefix
        self.sysconfdir = args.sysconfdir
        self.spooldir = args.spooldir
        self.initdir = args.initdir
        self.defaults = defaults_file(self.initdir)
        self.unitdir = args.unitdir
        self.aliases = args.aliases
        self.python = args.python
        self.lib = f"{self.prefix}/lib/postpy"
        self.docdir = f"{self.prefix}/share/doc/postpy"
        self.manifest_path = f"{self.lib}.INSTALLED"
        self.old = Manifest.load(self.staged(self.manifest_path))
        self.old_asides = self.old.asides()
        self.old_paths = set(self.old.paths())
        self.new = Manifest()

    def staged(self, path: str) -> Path:
        return Path(self.destdir + path)

    def claim(self, path: str, link_to: str | None = None, content: str | None = None) -> None:
        """Make room for a file install writes at ``path``, setting aside another program's."""
        if path in self.old_asides:
            kind, aside = self.old_asides[path]
            self.new.lines.append(f"{kind}\t{path}\t{aside}")
            return
        target = self.staged(path)
        if self.destdir or not os.path.lexists(target) or path in self.old_paths:
            return
        same_link = link_to is not None and target.is_symlink() and os.readlink(target) == link_to
        text = target.read_text(errors="replace") if not target.is_symlink() and target.is_file() else None
        ours = text is not None and (MARKER in text or text == content)
        if same_link or ours:
            # Written by an install that stopped before its manifest was (its set-aside
            # files are found again), or a link a package made just as we would (diverted
            # all the same, so that removing that package does not take it away).
            left = leftover_aside(path)
            if left:
                self.new.lines.append(f"{left[0]}\t{path}\t{left[1]}")
                return
            if ours or dpkg_owner(path) is None:
                return
        kind, aside = set_aside(path)
        self.new.lines.append(f"{kind}\t{path}\t{aside}")

    def write(self, path: str, text: str, mode: int) -> None:
        self.claim(path, content=text)
        target = self.staged(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        self.new.lines.append(path)

    def link(self, path: str, to: str) -> None:
        self.claim(path, link_to=to)
        target = self.staged(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            target.unlink()
        os.symlink(to, target)
        self.new.lines.append(path)

    def substitute(self, text: str) -> str:
        return (text.replace("@SBINDIR@", f"{self.prefix}/sbin")
                    .replace("@SYSCONFDIR@", self.sysconfdir)
                    .replace("@SPOOLDIR@", self.spooldir)
                    .replace("@DOCDIR@", self.docdir)
                    .replace("@DEFAULTS@", self.defaults))

    def run(self) -> None:
        self.install_library()
        import tomllib

        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        for name, entry in sorted(scripts.items()):
            module, func = entry.split(":")
            self.write(f"{self.prefix}/sbin/{name}", LAUNCHER.format(
                python=self.python, marker=MARKER, sysconfdir=self.sysconfdir, lib=self.lib,
                module=module, func=func), 0o755)
            if name in BIN_COMMANDS:
                self.link(f"{self.prefix}/bin/{name}", f"../sbin/{name}")
        postfix, postpy = POSTFIX_COMMAND
        self.link(f"{self.prefix}/sbin/{postfix}", postpy)
        for launcher in sorted(p for p in (ROOT / "libexec").iterdir() if p.is_file()):
            body = launcher.read_text().partition("\n")[2]
            self.write(f"{self.prefix}/libexec/postpy/{launcher.name}", DAEMON.format(
                python=self.python, marker=MARKER, lib=self.lib, body=body), 0o755)
        if self.prefix == "/usr":
            self.link("/usr/lib/sendmail", "../sbin/sendmail")
        self.write(f"{self.docdir}/README.md", (ROOT / "README.md").read_text(), 0o644)
        self.write(f"{self.initdir}/postpy", self.substitute((ROOT / "etc/init.d/postpy").read_text()), 0o755)
        self.write(f"{self.unitdir}/postpy.service",
                   self.substitute((ROOT / "etc/systemd/postpy.service").read_text()), 0o644)
        self.install_config()
        self.remove_stale()
        self.new.lines.append(self.manifest_path)
        target = self.staged(self.manifest_path)
        target.write_text("".join(f"{ln}\n" for ln in self.new.lines))
        os.chmod(target, 0o644)
        if not self.destdir:
            self.set_up_host()

    def install_library(self) -> None:
        """pip install the checkout and its dependencies into $(PREFIX)/lib/postpy.

        pip fills a new directory beside the old one, which is swapped in only once pip
        succeeded: a failed install leaves the running one whole, and a daemon that master
        starts meanwhile finds a complete library.
        """
        lib = self.staged(self.lib)
        fresh, old = lib.with_name("postpy.new"), lib.with_name("postpy.old")
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        pip = [self.python, "-m", "pip"]
        if subprocess.run(pip + ["--version"], capture_output=True).returncode != 0:
            venv_python = ROOT / ".venv/bin/python"    # e.g. Debian's python3 without python3-pip
            if not venv_python.exists():
                raise InstallError(f"{self.python} has no pip: install python3-pip, or run `make venv` "
                                   "first so the checkout's pip can install for it")
            pip = [str(venv_python), "-m", "pip", "--python", self.python]
        # Build from a clean copy: a checkout's build/ may hold modules that no longer exist,
        # and setuptools would ship them.
        with tempfile.TemporaryDirectory(prefix="postpy-install-") as tmp:
            source = Path(tmp) / "src"
            shutil.copytree(ROOT / "postpy", source / "postpy",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
            subprocess.run(pip + ["install", "--quiet", "--disable-pip-version-check",
                                  "--root-user-action=ignore", "--target", str(fresh), str(source)], check=True)
        shutil.rmtree(fresh / "bin", ignore_errors=True)   # pip's console scripts: the launchers replace them
        if lib.exists():
            os.rename(lib, old)
        os.rename(fresh, lib)
        shutil.rmtree(old, ignore_errors=True)
        self.new.lines.append(self.lib + "/")

    def replaces_postfix(self) -> bool:
        """Whether this install set aside another program's ``postfix`` command
        (now or in an earlier install): postpy takes Postfix's place."""
        return f"{self.prefix}/sbin/{POSTFIX_COMMAND[0]}" in self.new.asides()

    def install_config(self) -> None:
        conf = self.staged(self.sysconfdir)
        conf.mkdir(parents=True, exist_ok=True)
        main = conf / "main.cf"
        syslog_name = POSTFIX_SYSLOG_NAME if self.replaces_postfix() else ""
        if not main.exists():
            # Installed by an ordinary user (under $HOME, say), postpy runs as that user.
            owner = "postpy" if self.destdir or os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
            text = MAIN_CF.format(marker=MARKER, spooldir=self.spooldir, prefix=self.prefix,
                                  aliases=self.aliases, mail_owner=owner)
            if syslog_name:
                text += MAIN_CF_AS_POSTFIX.format(syslog_name=syslog_name)
                print(f"install: {self.sysconfdir}/main.cf: syslog_name = {syslog_name}, "
                      "as Postfix logged on this host")
            main.write_text(text)
        elif syslog_name and not re.search(r"^syslog_name\s*=", main.read_text(errors="replace"), re.M):
            print(f"install: {self.sysconfdir}/main.cf is kept: for Postfix's log readers (pflogsumm, "
                  f"fail2ban) run `postconf -e syslog_name={syslog_name}` and tag the services "
                  f"in master.cf as {syslog_name}/submission, ...")
        master = conf / "master.cf"
        if not master.exists():
            master.write_text(host_master_cf((ROOT / "etc/master.cf").read_text(), syslog_name))
        aliases = Path(self.aliases)     # a host file, not staged: packages create it in postinst
        if not self.destdir and not aliases.exists():
            aliases.parent.mkdir(parents=True, exist_ok=True)
            aliases.write_text("# See aliases(5); run newaliases after a change.\npostmaster: root\n")
        self.staged(self.spooldir).mkdir(parents=True, exist_ok=True)

    def remove_stale(self) -> None:
        """Files an older install wrote that this one did not (a command that went away)."""
        now = set(self.new.paths()) | {self.manifest_path}
        for path in reversed(self.old.paths()):
            if path not in now:
                remove(self.staged(path), path)
                if path in self.old_asides:
                    kind, aside = self.old_asides[path]
                    put_back(kind, path, aside)

    def set_up_host(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["sh", str(ROOT / "scripts/create-users")], check=True)
        systemd_reload(self.unitdir)
        sbin = f"{self.prefix}/sbin"
        out = subprocess.run([f"{sbin}/newaliases"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"install: warning: newaliases failed:\n{out.stdout}{out.stderr}", file=sys.stderr)
        want = f"{self.prefix}/libexec/postpy"
        have = subprocess.run([f"{sbin}/postconf", "-h", "daemon_directory"],
                              capture_output=True, text=True).stdout.strip()
        if have and os.path.realpath(have) != os.path.realpath(want):
            print(f"install: warning: {self.sysconfdir}/main.cf has daemon_directory = {have}, but the "
                  f"daemons are in {want}: `postconf -e daemon_directory={want}`", file=sys.stderr)
        # The first check creates the queue tree (and says so); only what remains is news.
        check = [f"{sbin}/postpy", "-c", self.sysconfdir, "check"]
        subprocess.run(check, capture_output=True)
        if subprocess.run(check).returncode != 0:
            raise InstallError(f"files installed, but `{' '.join(check)}` reported the errors above")


def host_master_cf(text: str, syslog_name: str = "") -> str:
    """The checkout's master.cf with its loopback test ports turned into the real ones
    (SMTP on 25, and the commented-out submission services on 587 and 465), on every
    interface (inet_interfaces decides), columns kept.  With ``syslog_name``, the
    services' own log tags (``-o syslog_name=postpy/submission``) start with it."""
    def real(match: re.Match[str]) -> str:
        port = HOST_PORTS[match.group(3)]
        return match.group(1) + port + " " * max(1, len(match.group(2)) - len(port))

    ports = "|".join(HOST_PORTS)
    text = re.sub(rf"^(#?)(127\.0\.0\.1:({ports}))(?=\s)", real, text, flags=re.M)
    if syslog_name:
        text = re.sub(r"^(#?\s+-o\s+syslog_name=)postpy/", rf"\g<1>{syslog_name}/", text, flags=re.M)
    return text


def systemd_reload(unitdir: str) -> None:
    """Tell a running systemd that the unit file changed (only where systemd looks for it)."""
    if os.path.isdir("/run/systemd/system") and unitdir in SYSTEMD_UNIT_DIRS and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)


def remove(target: Path, entry: str) -> None:
    if entry.endswith("/"):
        shutil.rmtree(target, ignore_errors=True)
    elif os.path.lexists(target):
        target.unlink()


def uninstall(args: argparse.Namespace) -> None:
    destdir = args.destdir or ""
    manifest_path = Path(destdir + f"{args.prefix}/lib/postpy.INSTALLED")
    if not manifest_path.exists():
        raise InstallError(f"{manifest_path} not found: postpy is not installed under {args.prefix}")
    postpy = Path(destdir + f"{args.prefix}/sbin/postpy")
    if not destdir and os.access(postpy, os.X_OK) and \
            subprocess.run([str(postpy), "status"], capture_output=True).returncode == 0:
        raise InstallError("postpy is running: stop it first (`postpy stop`, the init script or systemctl)")
    manifest = Manifest.load(manifest_path)
    removed: list[str] = []
    for line in reversed(manifest.lines):
        if "\t" in line:
            kind, path, aside = line.split("\t")
            if not destdir:
                put_back(kind, path, aside)
                print(f"uninstall: {path} restored")
            continue
        remove(Path(destdir + line), line)
        removed.append(line)
    for directory in (f"{args.prefix}/libexec/postpy", f"{args.prefix}/share/doc/postpy"):
        try:
            Path(destdir + directory).rmdir()
        except OSError:
            pass
    if not destdir:
        systemd_reload(args.unitdir)
    print(f"uninstall: removed {len(removed)} entries; configuration, aliases and queue kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--prefix", default="/usr/local")
    parser.add_argument("--destdir", default="")
    parser.add_argument("--sysconfdir", default="/etc/postpy")
    parser.add_argument("--spooldir", default="/var/spool/postpy")
    parser.add_argument("--initdir", default="/etc/init.d")
    parser.add_argument("--unitdir", default="/etc/systemd/system")
    parser.add_argument("--aliases", default="/etc/aliases")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if sys.version_info < (3, 11):   # noqa: UP036 - INSTALL_PYTHON may be any python3
        sys.exit("install: postpy needs Python 3.11 or later (set INSTALL_PYTHON)")
    for name in ("prefix", "sysconfdir", "spooldir", "initdir", "unitdir", "aliases"):
        value = getattr(args, name).rstrip("/") or "/"
        if not value.startswith("/"):
            sys.exit(f"install: --{name} must be an absolute path, not {value!r}")
        setattr(args, name, value)
    os.umask(0o022)     # the daemons (as postpy) and every user must read what we write
    try:
        if args.action == "install":
            Installer(args).run()
        else:
            uninstall(args)
    except (InstallError, OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{args.action}: {exc}")


if __name__ == "__main__":
    main()
