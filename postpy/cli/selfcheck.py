"""``postpy check``: can mail_owner run the daemons at all?

master starts every daemon with its own interpreter (``sys.executable``),
and every daemon but local drops to mail_owner before it serves.  If
mail_owner cannot execute that interpreter, or read its library or
postpy's code (a Python built under root's home), daemons die at start or,
worse, at the first use of something loaded late.  :func:`check_mail_owner_can_run`
runs the interpreter as mail_owner, as master would, imports what each
daemon of ``daemon_directory`` needs (:mod:`postpy.server.preload`) and
reads each launcher, and says what to do when that fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import postpy
from postpy.config.maincf import Config
from postpy.server import preload
from postpy.util import privs

# Run as mail_owner: argv is the path to put first, then "read:PATH" and
# "import:NAME" items; prints one line per failure.
_PROBE = """\
import importlib, sys
sys.path.insert(0, sys.argv[1])
failed = 0
for item in sys.argv[2:]:
    kind, _, name = item.partition(":")
    try:
        if kind == "read":
            open(name, "rb").close()
        else:
            importlib.import_module(name)
    except BaseException as exc:
        failed = 1
        print(item, type(exc).__name__ + ": " + str(exc), sep="\\t")
sys.exit(failed)
"""

TIMEOUT = 60.0
ADVICE = ("install postpy with a Python that {user} can read "
          "(make install INSTALL_PYTHON=/usr/bin/python3), or make {where} readable by {user}")


def check_mail_owner_can_run(cfg: Config, owner: privs.Identity, user: str) -> list[str]:
    """Errors (empty when all is well); only root can check, as only root drops privileges."""
    from postpy.master import children

    if os.getuid() != 0:
        return []
    directory = children.daemon_directory(cfg)
    try:
        programs = sorted(name for name in os.listdir(directory)
                          if os.path.isfile(os.path.join(directory, name)))
    except OSError as exc:
        return [f"daemon_directory {directory}: {exc.strerror}"]
    items = [f"read:{os.path.join(directory, name)}" for name in programs]
    for name in programs:
        items += [f"import:{module}" for module in _launcher_modules(os.path.join(directory, name))]
        items += [f"import:{module}" for module in preload.modules_for(name)
                  if module not in preload.OPTIONAL]
    code_root = os.path.dirname(os.path.dirname(os.path.abspath(postpy.__file__)))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, code_root, *dict.fromkeys(items)],
            env=children.child_environment(cfg), cwd="/", capture_output=True, text=True,
            timeout=TIMEOUT, preexec_fn=lambda: privs.drop_to(owner.uid, owner.gid))
    except OSError as exc:
        where = os.path.dirname(sys.executable)
        return [f"mail_owner {user} cannot run {sys.executable}: {exc.strerror}: "
                + ADVICE.format(user=user, where=where)]
    except subprocess.TimeoutExpired:
        return [f"mail_owner {user}: {sys.executable} did not finish importing postpy in {TIMEOUT:.0f}s"]
    errors = []
    places: set[str] = set()
    for line in done.stdout.splitlines():
        item, _, why = line.partition("\t")
        kind, _, name = item.partition(":")
        where = os.path.dirname(name) if kind == "read" else _location(name)
        if where in places:                # one line per unreadable place
            continue
        places.add(where)
        what = f"read {name}" if kind == "read" else f"import {name} with {sys.executable}"
        errors.append(f"mail_owner {user} cannot {what} ({why}): " + ADVICE.format(user=user, where=where))
    if done.returncode != 0 and not errors:
        errors.append(f"mail_owner {user} cannot run {sys.executable} (exit status {done.returncode}): "
                      f"{done.stderr.strip()[-300:]}")
    return errors


_SERVICE_IMPORT = re.compile(r"^from (postpy(?:\.\w+)+) import main\b", re.MULTILINE)


def _launcher_modules(path: str) -> list[str]:
    """The service module a launcher runs (``from postpy.smtp.service import main``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return _SERVICE_IMPORT.findall(fh.read(65536))
    except OSError:
        return []


def _location(module: str) -> str:
    """The directory root imports ``module`` from, for the message."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None else None
    return os.path.dirname(origin) if origin else "its directory"
