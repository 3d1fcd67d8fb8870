"""postmap(1): create, query and update ``key value`` lookup tables.

    postmap [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [type:]file...

Without -q/-d/-s, each ``[type:]file`` source is read and ``file.lmdb`` is
written in one atomic replace (see :mod:`postpy.tables.lmdb_table`); a bare
file name uses ``default_database_type``, and ``hash:``/``btree:`` are built
as lmdb.  The command runs as whoever invokes it; when root builds a table
from a source owned by someone else the result is given to that owner
(Postfix gets the same ownership by switching to the owner; -o keeps root).

- ``-q key``   print the value of the first table that has key; exit 0, or
  exit 1 when none does.  ``-q -`` reads keys from stdin and prints
  ``key<TAB>value`` for each one found (exit 0 when any was found).  Every
  ``type:name`` that :mod:`postpy.tables.maps` knows works here
  (``inline:{a=b}``, ``texthash:/f``, ``unix:passwd.byname``, ...).
- ``-d key``   remove key from each table (``-d -``: keys from stdin); exit 0
  when something was removed, else 1.
- ``-s``       print every entry.
- ``-i``       incremental: add entries read from stdin to the existing tables.
- ``-f``       no case folding;  ``-r`` duplicates replace;  ``-w`` duplicates
  are ignored silently (the default warns and keeps the first).
- ``-p``       mode 0644 instead of the source's group/other read bits.
- ``-u``       no UTF-8 checks;  ``-N``/``-n`` accepted and ignored (no NUL
  convention in lmdb tables);  ``-v`` more logging.

Warnings go to the log and to stderr as ``postmap: warning: ...``.  Exit
status on failure follows sysexits(3): 64 usage, 66 unreadable source,
69 unreadable table, 73 cannot write the table, 78 configuration error.

This module also holds the driver that postalias(1) shares: the two commands
differ only in the source syntax, the query output and the ``@`` signature
(see :class:`Flavor`).
"""

from __future__ import annotations

import getopt
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.config.maincf import Config, ConfigError, load_config
from postpy.tables import lmdb_table, maps
from postpy.tables.source_parser import (
    DUP_IGNORE,
    DUP_REPLACE,
    DUP_WARN,
    ParseResult,
    decode_source,
    parse_source,
)
from postpy.util import maillog
from postpy.util.sysexits import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_UNAVAILABLE,
    EX_USAGE,
)

# parse(text, source label, fold_case, duplicate policy, utf8_check)
Parser = Callable[[str, str, bool, str, bool], ParseResult]


@dataclass(frozen=True)
class Flavor:
    """What differs between postmap and postalias."""

    program: str
    usage: str
    parse: Parser
    query_line: str          # format of "-q -" and "-s" lines, with {key} and {value}
    signature: bool = False  # add the Sendmail "@" -> "@" entry


@dataclass
class Options:
    fold: bool = True
    incremental: bool = False
    duplicates: str = DUP_WARN
    save_perm: bool = True
    as_owner: bool = True
    utf8: bool = True
    query: str | None = None
    delete: str | None = None
    dump: bool = False
    verbose: int = 0
    config_dir: str | None = None
    files: list[str] = field(default_factory=list)


class Fatal(Exception):
    """Stop the command: text for the log, status for the exit."""

    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


def _options(flavor: Flavor, argv: list[str]) -> Options:
    try:
        pairs, files = getopt.gnu_getopt(argv, "Nc:d:finopq:rsuvw")
    except getopt.GetoptError as exc:
        raise Fatal(f"{exc.msg}; {flavor.usage}", EX_USAGE) from None
    opts = Options(files=files)
    for flag, value in pairs:
        if flag in ("-d", "-q", "-s") and (opts.query is not None or opts.delete is not None
                                           or opts.dump):
            raise Fatal("specify only one of -s -q or -d", EX_USAGE)
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-d":
            opts.delete = value
        elif flag == "-q":
            opts.query = value
        elif flag == "-s":
            opts.dump = True
        elif flag == "-f":
            opts.fold = False
        elif flag == "-i":
            opts.incremental = True
        elif flag == "-o":
            opts.as_owner = False
        elif flag == "-p":
            opts.save_perm = False
        elif flag == "-r":
            opts.duplicates = DUP_REPLACE
        elif flag == "-w":
            opts.duplicates = DUP_IGNORE
        elif flag == "-u":
            opts.utf8 = False
        elif flag == "-v":
            opts.verbose += 1
    if not files:
        raise Fatal(flavor.usage, EX_USAGE)
    return opts


def _stdin_keys() -> list[str]:
    text = decode_source(sys.stdin.buffer.read())
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


def _full_spec(arg: str, default_type: str) -> str:
    kind, name = maps.split_spec(arg, default_type)
    return f"{kind}:{name}"


def _db_path(arg: str, default_type: str) -> str:
    """The lmdb file for a writable ``[type:]file`` argument."""
    kind, name = maps.split_spec(arg, default_type)
    if kind not in maps.LMDB_ALIASES:
        raise Fatal(f"unsupported table type for writing: {kind} (in {arg})", EX_USAGE)
    if not name:
        raise Fatal(f"missing table file name in {arg}", EX_USAGE)
    if kind != "lmdb":
        maillog.warning(f"{kind}: tables are built as lmdb here: writing {name}.lmdb")
    return name + ".lmdb"


def _kept_attributes(db_path: str) -> tuple[int, tuple[int, int] | None]:
    """Mode and owner for an updated table: those of the file it replaces."""
    try:
        st = os.stat(db_path)
    except OSError:
        return 0o644, None
    return stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)


# --- the operations --------------------------------------------------------

def _query(flavor: Flavor, opts: Options, default_type: str) -> int:
    specs = [_full_spec(arg, default_type) for arg in opts.files]
    keys = _stdin_keys() if opts.query == "-" else [opts.query or ""]
    found = False
    try:
        for key in keys:
            value = maps.lookup_in_maps(specs, key, fold=opts.fold, warn=False)
            if value is None:
                continue
            found = True
            if opts.query == "-":
                sys.stdout.write(flavor.query_line.format(key=key, value=value) + "\n")
            else:
                sys.stdout.write(value + "\n")
    except maps.TableError as exc:
        raise Fatal(str(exc), EX_UNAVAILABLE) from None
    sys.stdout.flush()
    return 0 if found else 1


def _dump(flavor: Flavor, opts: Options, default_type: str) -> int:
    for arg in opts.files:
        try:
            entries = maps.open_table(_full_spec(arg, default_type), fold=opts.fold, warn=False).items()
        except maps.TableError as exc:
            raise Fatal(str(exc), EX_UNAVAILABLE) from None
        for key, value in entries:
            sys.stdout.write(flavor.query_line.format(key=key, value=value) + "\n")
    sys.stdout.flush()
    return 0


def _delete(opts: Options, default_type: str) -> int:
    keys = _stdin_keys() if opts.delete == "-" else [opts.delete or ""]
    if opts.fold:
        keys = [key.lower() for key in keys]
    found = False
    for arg in opts.files:
        db_path = _db_path(arg, default_type)
        try:
            with lmdb_table.update_lock(db_path):
                entries = dict(lmdb_table.read_all(db_path))
                removed = [key for key in keys if entries.pop(key, None) is not None]
                if removed:
                    mode, owner = _kept_attributes(db_path)
                    _write(db_path, entries, mode, owner)
                    maillog.info(f"{db_path}: removed {len(removed)} entr"
                                 f"{'y' if len(removed) == 1 else 'ies'}")
                found = found or bool(removed)
        except lmdb_table.TableError as exc:
            raise Fatal(str(exc), EX_UNAVAILABLE) from None
    return 0 if found else 1


def _write(db_path: str, entries: dict[str, str], mode: int, owner: tuple[int, int] | None) -> int:
    try:
        return lmdb_table.build(db_path, entries.items(), mode=mode, owner=owner)
    except lmdb_table.TableError as exc:
        raise Fatal(str(exc), EX_CANTCREAT) from None


def _merge(db_path: str, existing: dict[str, str], new: ParseResult, policy: str) -> dict[str, str]:
    for entry in new.entries:
        if entry.key not in existing or policy == DUP_REPLACE:
            existing[entry.key] = entry.value
        elif policy == DUP_WARN:
            maillog.warning(f"{db_path}: duplicate entry: \"{entry.key}\"")
    return existing


def _build(flavor: Flavor, opts: Options, default_type: str, utf8: bool) -> int:
    stdin_text = decode_source(sys.stdin.buffer.read()) if opts.incremental else ""
    for arg in opts.files:
        db_path = _db_path(arg, default_type)
        source = maps.split_spec(arg, default_type)[1]
        mode, owner = 0o644, None
        if opts.incremental:
            text, label = stdin_text, "stdin"
        else:
            try:
                with open(source, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    text, label = decode_source(fh.read()), source
            except OSError as exc:
                raise Fatal(f"open {source}: {exc.strerror}", EX_NOINPUT) from None
            if opts.save_perm and stat.S_ISREG(st.st_mode):
                mode = 0o600 | (st.st_mode & 0o044)
            if opts.as_owner:
                owner = (st.st_uid, st.st_gid)
        parsed = flavor.parse(text, label, opts.fold, opts.duplicates, utf8)
        for warning in parsed.warnings:
            maillog.warning(warning)
        malformed = [w for w in parsed.warnings if ": duplicate entry: " not in w]
        if malformed:
            # Unlike Postfix, which skips such lines and builds the rest: a table
            # missing entries its author meant to have would misroute mail, so
            # the old table stays until the source is fixed.
            raise Fatal(f"{label}: {len(malformed)} malformed line(s); {db_path} not changed",
                        EX_DATAERR)
        good = ParseResult([], [])
        for entry in parsed.entries:
            problem = lmdb_table.key_problem(entry.key)
            if problem:
                maillog.warning(f"{label}, line {entry.line}: {problem} -- ignoring this entry")
            else:
                good.entries.append(entry)
        try:
            with lmdb_table.update_lock(db_path):
                existing: dict[str, str] = {}
                if opts.incremental and os.path.exists(db_path):
                    existing = dict(lmdb_table.read_all(db_path))
                    mode, owner = _kept_attributes(db_path)
                entries = _merge(db_path, existing, good, opts.duplicates)
                if flavor.signature:
                    entries["@"] = "@"
                count = _write(db_path, entries, mode, owner)
        except lmdb_table.TableError as exc:
            raise Fatal(str(exc), EX_UNAVAILABLE) from None
        if opts.verbose:
            maillog.info(f"{db_path}: {count} entries")
    return 0


# --- driver ----------------------------------------------------------------

def _load(opts: Options, program: str) -> tuple[Config, str, bool]:
    try:
        cfg = load_config(opts.config_dir)
        maillog.setup_from_config(program, cfg, stderr=True)
        default_type = cfg.get("default_database_type").strip() or "lmdb"
        utf8 = opts.utf8 and cfg.get_bool("smtputf8_enable")
    except ConfigError as exc:
        raise Fatal(str(exc), EX_CONFIG) from None
    return cfg, default_type, utf8


def run(flavor: Flavor, argv: list[str] | None) -> int:
    """Run the command; return its exit status (fatal errors are logged)."""
    maillog.setup(flavor.program, stderr=True)
    try:
        opts = _options(flavor, list(sys.argv[1:] if argv is None else argv))
        _cfg, default_type, utf8 = _load(opts, flavor.program)
        if opts.query is not None:
            return _query(flavor, opts, default_type)
        if opts.dump:
            return _dump(flavor, opts, default_type)
        if opts.delete is not None:
            return _delete(opts, default_type)
        return _build(flavor, opts, default_type, utf8)
    except Fatal as exc:
        return fatal(exc.text, exc.status)


def fatal(text: str, status: int) -> int:
    """Log ``fatal: text`` (and echo it to stderr); return the status.

    maillog.fatal exits; commands return their status instead, so that
    newaliases and sendmail -bi can call them in-process.
    """
    try:
        maillog.fatal(text, status)
    except SystemExit:
        pass
    return status


def _parse_postmap(text: str, source: str, fold: bool, duplicates: str, utf8: bool) -> ParseResult:
    return parse_source(text, source, fold_case=fold, duplicates=duplicates, utf8_check=utf8)


POSTMAP = Flavor(
    program="postmap",
    usage="usage: postmap [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
    parse=_parse_postmap,
    query_line="{key}\t{value}",
)


def main(argv: list[str] | None = None) -> int:
    return run(POSTMAP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
