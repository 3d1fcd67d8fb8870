#!/usr/bin/env python3
"""Install or uninstall postpy on this host (called by `make install` / `make uninstall`).

Layout (every directory can be changed on the make command line):

  $(PREFIX)/lib/postpy/         the postpy package and its dependencies (pip --target)
  $(PREFIX)/sbin/               postpy, sendmail, postconf, postqueue, ... (small Python launchers)
  $(PREFIX)/bin/                mailq, newaliases (also as links in sbin)
  $(PREFIX)/libexec/postpy/     the daemons master starts
  $(SYSCONFDIR)                 main.cf, master.cf (existing files are kept)
  $(SPOOLDIR)                   the queue
  $(INITDIR), $(UNITDIR)        the LSB init script and the systemd unit

With PREFIX=/usr, /usr/sbin/sendmail is postpy's and /usr/lib/sendmail links
to it.  Every file installed is listed in $(PREFIX)/lib/postpy/INSTALLED,
which `uninstall` reads: it removes exactly those files, and keeps the
configuration and the queue.  DESTDIR stages the whole tree elsewhere (for
packaging); users are then not created and `postpy check` is not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN_COMMANDS = ("mailq", "newaliases")

LAUNCHER = """#!{python} -sP
# postpy launcher, written by make install
import sys
sys.path.insert(0, {lib!r})
from {module} import {func}
sys.exit({func}())
"""

DAEMON = """#!{python} -sP
# postpy daemon launcher, written by make install; started by master
import sys
sys.path.insert(0, {lib!r})
from postpy.{program}.service import main
main()
"""


class Installer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.destdir = args.destdir or ""
        self.prefix = args.prefix
        self.sysconfdir = args.sysconfdir
        self.spooldir = args.spooldir
        self.initdir = args.initdir
        self.unitdir = args.unitdir
        self.python = args.python
        self.lib = f"{self.prefix}/lib/postpy"
        self.installed: list[str] = []

    def staged(self, path: str) -> Path:
        return Path(self.destdir + path)

    def record(self, path: str) -> None:
        self.installed.append(path)

    def write(self, path: str, text: str, mode: int) -> None:
        target = self.staged(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        self.record(path)

    def link(self, path: str, to: str) -> None:
        target = self.staged(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(to, target)
        self.record(path)

    def substitute(self, text: str) -> str:
        return (text.replace("@SBINDIR@", f"{self.prefix}/sbin")
                    .replace("@SYSCONFDIR@", self.sysconfdir)
                    .replace("@SPOOLDIR@", self.spooldir))

    def run(self) -> None:
        lib = self.staged(self.lib)
        if lib.exists():
            shutil.rmtree(lib)
        subprocess.run([self.python, "-m", "pip", "install", "-q", "--no-compile", "--target", str(lib),
                        str(ROOT)], check=True)
        self.record(self.lib + "/")
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        for name, entry in sorted(scripts.items()):
            module, func = entry.split(":")
            text = LAUNCHER.format(python=self.python, lib=self.lib, module=module, func=func)
            self.write(f"{self.prefix}/sbin/{name}", text, 0o755)
            if name in BIN_COMMANDS:
                self.link(f"{self.prefix}/bin/{name}", f"../sbin/{name}")
        for daemon in sorted(p.name for p in (ROOT / "libexec").iterdir() if p.is_file()):
            text = DAEMON.format(python=self.python, lib=self.lib, program=daemon)
            self.write(f"{self.prefix}/libexec/postpy/{daemon}", text, 0o755)
        if self.prefix == "/usr":
            self.link("/usr/lib/sendmail", "../sbin/sendmail")
        self.install_config()
        self.write(f"{self.initdir}/postpy", self.substitute((ROOT / "etc/init.d/postpy").read_text()), 0o755)
        self.write(f"{self.unitdir}/postpy.service",
                   self.substitute((ROOT / "etc/systemd/postpy.service").read_text()), 0o644)
        manifest = "".join(f"{p}\n" for p in self.installed)
        self.write(f"{self.lib}.INSTALLED", manifest + f"{self.lib}.INSTALLED\n", 0o644)
        if not self.destdir:
            if os.geteuid() == 0:
                subprocess.run(["sh", str(ROOT / "scripts/create-users")], check=True)
            subprocess.run([f"{self.prefix}/sbin/postpy", "-c", self.sysconfdir, "check"], check=False)

    def install_config(self) -> None:
        conf = self.staged(self.sysconfdir)
        conf.mkdir(parents=True, exist_ok=True)
        main = conf / "main.cf"
        if not main.exists():
            main.write_text(
                "# postpy main.cf (see `postconf -d` for every parameter and its default)\n"
                f"queue_directory = {self.spooldir}\n"
                f"daemon_directory = {self.prefix}/libexec/postpy\n"
                "alias_maps = lmdb:/etc/aliases\n"
                "alias_database = lmdb:/etc/aliases\n")
        master = conf / "master.cf"
        if not master.exists():
            text = (ROOT / "etc/master.cf").read_text().replace("127.0.0.1:2525", "25            ")
            master.write_text(text)
        self.staged(self.spooldir).mkdir(parents=True, exist_ok=True)


def uninstall(args: argparse.Namespace) -> None:
    manifest = Path((args.destdir or "") + f"{args.prefix}/lib/postpy.INSTALLED")
    if not manifest.exists():
        sys.exit(f"uninstall: {manifest} not found: postpy is not installed under {args.prefix}")
    for line in reversed(manifest.read_text().splitlines()):
        path = Path((args.destdir or "") + line)
        if line.endswith("/"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_symlink() or path.exists():
            path.unlink()
    for directory in (f"{args.prefix}/libexec/postpy",):
        try:
            Path((args.destdir or "") + directory).rmdir()
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--prefix", default="/usr/local")
    parser.add_argument("--destdir", default="")
    parser.add_argument("--sysconfdir", default="/etc/postpy")
    parser.add_argument("--spooldir", default="/var/spool/postpy")
    parser.add_argument("--initdir", default="/etc/init.d")
    parser.add_argument("--unitdir", default="/etc/systemd/system")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if args.action == "install":
        Installer(args).run()
    else:
        uninstall(args)


if __name__ == "__main__":
    main()
