"""postconf: show and edit main.cf, list master.cf services (Postfix's postconf(1)).

Usage::

    postconf [-c dir] [-dnhHx] [-o name=value] [name ...]   show parameters
    postconf [-c dir] -e name=value ...                       edit main.cf
    postconf [-c dir] name=value ...                          (-e is implied)
    postconf [-c dir] -X name ...                             remove settings
    postconf [-c dir] -M [service[/type] ...]                 master.cf services
    postconf -m | -l                                          table types, lock methods

Showing reads main.cf through :func:`postpy.config.maincf.load_config` and
the defaults from :mod:`postpy.config.params`; it prints ``name = value``
sorted by name, with the value as written (``$name`` left alone unless
``-x``).  ``-n`` shows only what main.cf sets, ``-d`` only the defaults (and
does not read main.cf), ``-h`` values alone, ``-H`` names alone.  An unknown
name is only a warning (``postconf: warning: name: unknown parameter``, exit
status 0), as is a ``-M`` request that matches no service (``unmatched
request``).  ``-M`` prints Postfix's columns: the service name padded to 10
characters, the type to 5, the next five fields to 7, each followed by a
space; a field that overflows pushes the rest right, which catch up with
their column as soon as they can.

Editing is textual, so comments, blank lines and the order of other
settings survive: a setting being changed is replaced where it first
appears (its continuation lines and any later duplicates are dropped), a
new one is appended.  The new text goes to a temporary file in the same
directory, is fsynced, gets the old file's mode (and owner, as root) and is
renamed over main.cf, so a reader sees the old file or the new one, never
half of one.  Concurrent editors are serialised by an flock on the
configuration directory.

Runs with the caller's privileges; writes nothing but main.cf.  Exit
status: 0, 1 for a fatal error (bad main.cf or master.cf, I/O), 64
(EX_USAGE) for bad options.
"""

from __future__ import annotations

import fcntl
import getopt
import os
import re
import stat
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from postpy.config.maincf import Config, ConfigError, config_dir_from, load_config, logical_lines
from postpy.config.mastercf import parse_master_cf
from postpy.config.params import BY_NAME
from postpy.util.sysexits import EX_USAGE

USAGE = ("usage: postconf [-c config_dir] [-dhHnx] [-o name=value] [name ...]\n"
         "       postconf [-c config_dir] [-e] name=value ...\n"
         "       postconf [-c config_dir] -X name ...\n"
         "       postconf [-c config_dir] -M [service[/type] ...]\n"
         "       postconf -m | -l")
TABLE_TYPES = ("btree", "hash", "inline", "lmdb", "static", "texthash", "unix")
LOCK_METHODS = ("flock", "fcntl", "dotlock")
_NAME = re.compile(r"[A-Za-z0-9_]+")


class UsageError(Exception):
    """Bad command line; exit EX_USAGE."""


class Fatal(Exception):
    """Cannot continue; exit 1."""


@dataclass
class Options:
    config_dir: str | None = None
    mode: str = "show"               # show | edit | remove | master | tables | locks
    defaults: bool = False           # -d
    explicit: bool = False           # -n
    values_only: bool = False        # -h
    names_only: bool = False         # -H
    expand: bool = False             # -x
    overrides: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


def _name_value(arg: str, option: str) -> tuple[str, str]:
    name, eq, value = arg.partition("=")
    name, value = name.strip(), value.strip()
    if not eq:
        raise UsageError(f"{option} requires name=value input: \"{arg}\"")
    if not _NAME.fullmatch(name):
        raise UsageError(f"{option}: invalid parameter name: \"{name}\"")
    if "\n" in value or "\r" in value:
        raise UsageError(f"{option}: value of {name} contains a line break")
    return name, value


def parse_args(argv: Sequence[str]) -> Options:
    try:
        flags, args = getopt.getopt(list(argv), "c:dehHlmMno:xXf")
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from None
    opts = Options(args=args)
    modes: list[str] = []
    for flag, value in flags:
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-d":
            opts.defaults = True
        elif flag == "-n":
            opts.explicit = True
        elif flag == "-h":
            opts.values_only = True
        elif flag == "-H":
            opts.names_only = True
        elif flag == "-x":
            opts.expand = True
        elif flag == "-o":
            name, val = _name_value(value, "-o")
            opts.overrides[name] = val
        elif flag == "-f":
            pass                     # fold long lines: ours are never folded
        else:
            modes.append({"-e": "edit", "-X": "remove", "-M": "master",
                          "-m": "tables", "-l": "locks"}[flag])
    if len(set(modes)) > 1:
        raise UsageError("options " + ", ".join(sorted(set(modes))) + " are mutually exclusive")
    if modes:
        opts.mode = modes[0]
    elif args and "=" in args[0]:
        opts.mode = "edit"           # Postfix >= 2.8: name=value implies -e
    if opts.defaults and opts.explicit:
        raise UsageError("specify one of -d and -n")
    if opts.mode in ("edit", "remove") and not args:
        raise UsageError(f"-{'e' if opts.mode == 'edit' else 'X'} requires at least one parameter")
    if opts.mode == "remove":
        for arg in args:
            if not _NAME.fullmatch(arg):
                raise UsageError(f"-X: invalid parameter name: \"{arg}\"")
    return opts


# -- showing ------------------------------------------------------------------

def _setting(name: str, value: str) -> str:
    return f"{name} = {value}" if value else f"{name} ="


def _format(name: str, value: str, opts: Options) -> str:
    if opts.names_only:
        return name
    if opts.values_only:
        return value
    return _setting(name, value)


def show(opts: Options, out: list[str], warn: list[str]) -> int:
    """Append output lines to ``out`` and warnings to ``warn``; return the exit status."""
    directory = config_dir_from(opts.config_dir)
    if opts.defaults:
        cfg = Config(directory)                  # main.cf is not read for -d
        known: Collection[str] = BY_NAME
    else:
        cfg = load_config(directory, overrides=opts.overrides)
        warn.extend(cfg.warnings)
        known = set(BY_NAME) | set(cfg.explicit)
    if opts.args:
        names = []
        for name in opts.args:
            if name in known:
                names.append(name)
            else:
                warn.append(f"{name}: unknown parameter")
    else:
        names = sorted(cfg.explicit if opts.explicit else known)
    for name in names:
        if opts.explicit and name not in cfg.explicit:
            continue
        value = cfg.get(name) if opts.expand else cfg.raw(name) or ""
        out.append(_format(name, value, opts))
    return 0


MASTER_COLUMNS = (10, 5, 7, 7, 7, 7, 7)     # widths of the fields before the command


def master_line(fields: list[str]) -> str:
    """One master.cf service in Postfix's ``postconf -M`` columns (see above)."""
    line, column = "", 0
    for i, text in enumerate(fields):
        if i:
            line += " " * max(1, column - len(line))
        line += text
        if i < len(MASTER_COLUMNS):
            column += MASTER_COLUMNS[i] + 1
    return line


def show_master(opts: Options, out: list[str], warn: list[str]) -> int:
    """master.cf services, one per line, in Postfix's columns."""
    directory = config_dir_from(opts.config_dir)
    path = os.path.join(directory, "master.cf")
    text = _read(path)
    parse_master_cf(text, path)                  # report errors with file and line
    wanted = [arg.partition("/")[::2] for arg in opts.args]
    matched = [False] * len(wanted)
    for _number, line in logical_lines(text, path):
        fields = line.split()
        kind = "unix" if fields[1] == "fifo" else fields[1]
        hits = [i for i, (svc, typ) in enumerate(wanted)
                if svc == fields[0] and typ in ("", fields[1], kind)]
        for i in hits:
            matched[i] = True
        if not wanted or hits:
            out.append(master_line(fields))
    for arg, found in zip(opts.args, matched, strict=True):
        if not found:
            warn.append(f'unmatched request: "{arg}"')
    return 0


# -- editing ------------------------------------------------------------------

def edit_text(text: str, updates: Mapping[str, str], removals: Collection[str]) -> str:
    """main.cf text with ``updates`` applied and ``removals`` taken out.

    Lines are classified the way the reader classifies them: a comment or
    blank line is copied and does not end a logical line; a line that starts
    with white space continues the previous setting and goes with it.
    """
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    out: list[str] = []
    written: set[str] = set()
    dropping = False
    for line in pieces:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
        elif line[0] in " \t":
            if not dropping:
                out.append(line)
        else:
            name, eq, _ = line.partition("=")
            name = name.strip()
            dropping = bool(eq) and (name in updates or name in removals)
            if not dropping:
                out.append(line)
            elif name in updates and name not in written:
                out.append(_setting(name, updates[name]))
                written.add(name)
    for name, value in updates.items():
        if name not in written:
            out.append(_setting(name, value))
    return "".join(line + "\n" for line in out)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        raise Fatal(f"open {path}: No such file or directory") from None
    except OSError as exc:
        raise Fatal(f"open {path}: {exc.strerror}") from None


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to a temporary file, fsync it, rename it over ``path``."""
    import tempfile  # only editing needs it

    directory = os.path.dirname(path)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=".main.cf.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8", "surrogateescape"))
            fh.flush()
            os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode) if old else 0o644)
            if old and os.geteuid() == 0:
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def edit_main_cf(config_dir: str, updates: Mapping[str, str], removals: Collection[str]) -> None:
    path = os.path.realpath(os.path.join(config_dir, "main.cf"))
    directory = os.path.dirname(path)
    try:
        lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise Fatal(f"open {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)         # one editor at a time
        try:
            text = _read(path)
        except Fatal:
            if os.path.exists(path):
                raise
            text = ""
        try:
            replace_file(path, edit_text(text, updates, removals))
        except OSError as exc:
            raise Fatal(f"edit {path}: {exc.strerror or exc}") from None
    finally:
        os.close(lock)


# -- main ---------------------------------------------------------------------

def run(opts: Options, out: list[str], warn: list[str]) -> int:
    if opts.mode == "tables":
        out.extend(TABLE_TYPES)
        return 0
    if opts.mode == "locks":
        out.extend(LOCK_METHODS)
        return 0
    if opts.mode == "master":
        return show_master(opts, out, warn)
    if opts.mode == "edit":
        updates = dict(_name_value(arg, "-e") for arg in opts.args)
        edit_main_cf(config_dir_from(opts.config_dir), updates, ())
        return 0
    if opts.mode == "remove":
        edit_main_cf(config_dir_from(opts.config_dir), {}, set(opts.args))
        return 0
    return show(opts, out, warn)


def main(argv: Sequence[str] | None = None) -> int:
    out: list[str] = []
    warn: list[str] = []
    try:
        status = run(parse_args(sys.argv[1:] if argv is None else argv), out, warn)
    except UsageError as exc:
        sys.stderr.write(f"postconf: fatal: {exc}\n{USAGE}\n")
        return EX_USAGE
    except (ConfigError, Fatal) as exc:
        for text in warn:
            sys.stderr.write(f"postconf: warning: {text}\n")
        sys.stderr.write(f"postconf: fatal: {exc}\n")
        return 1
    for text in warn:
        sys.stderr.write(f"postconf: warning: {text}\n")
    data = "".join(line + "\n" for line in out)
    try:
        sys.stdout.buffer.write(data.encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    except BrokenPipeError:                      # postconf | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


if __name__ == "__main__":
    sys.exit(main())
