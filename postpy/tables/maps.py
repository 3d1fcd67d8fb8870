"""Postfix ``type:name`` lookup tables, opened once per process.

Every consumer of a ``*_maps`` parameter (local for ``alias_maps``, smtpd
for ``local_recipient_maps``, the smtp client for ``transport_maps``, ...)
and the ``postmap -q``/``postalias -q`` commands open tables here.

Supported types:

``lmdb:/path``
    the indexed file ``/path.lmdb`` built by postmap/postalias; follows
    rebuilds at once (see :mod:`postpy.tables.lmdb_table`).  A bare path
    with no type means ``lmdb:``.
``hash:/path``, ``btree:/path``
    accepted for compatibility with existing main.cf files and read as
    ``lmdb:/path`` (one warning per type per process).
``texthash:/path``
    the postmap source file itself, read into memory without an index and
    re-read when its mtime changes.
``regexp:/path``, ``pcre:/path``, ``cidr:/path``
    ordered patterns, first match wins (regexp_table(5), pcre_table(5),
    cidr_table(5)); read when opened and re-read when the file changes.
    Keys are never folded: the patterns say how to compare.  See
    :mod:`postpy.tables.pattern_table`.
``inline:{key=value, { key = text, with commas }}``
    entries written in the spec itself.
``static:value``, ``static:{value with spaces}``
    every key finds the value.
``unix:passwd.byname``
    the password database; the result is the passwd line of the user.
``proxy:TYPE:NAME``
    read as ``TYPE:NAME`` directly (there is no proxymap service).

Keys are folded to lower case before lookup unless ``fold=False`` (postmap
and postalias ``-f``).  Errors raise :class:`TableError` with text that names
the table; a table that failed to open is not cached, so the next call tries
again.  Each failed open is also logged as Postfix's daemons do
(``warning: lmdb:/etc/postpy/aliases is unavailable. open database
/etc/postpy/aliases.lmdb: No such file or directory``), so a temporary
lookup failure always has its cause in the log; postmap and postalias pass
``warn=False`` and report the error themselves.
"""

from __future__ import annotations

import os
import pwd
import re
from typing import Protocol

from postpy.config.maincf import split_list
from postpy.tables import source_parser
from postpy.tables.cidr_table import CIDR
from postpy.tables.lmdb_table import LmdbTable, TableError
from postpy.tables.pattern_table import PatternTable, Syntax
from postpy.tables.regexp_table import PCRE, REGEXP
from postpy.util import maillog

__all__ = ["Table", "TableError", "open_table", "lookup_in_maps", "split_spec", "clear_cache",
           "unavailable", "LMDB_ALIASES"]

LMDB_ALIASES = ("lmdb", "hash", "btree")
_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")


class Table(Protocol):
    spec: str

    def lookup(self, key: str) -> str | None: ...

    def items(self) -> list[tuple[str, str]]: ...


def split_spec(spec: str, default_type: str = "lmdb") -> tuple[str, str]:
    """``type:name`` -> (type, name); a bare name gets ``default_type``."""
    kind, sep, name = spec.partition(":")
    if sep and _TYPE.match(kind):
        return kind, name
    return default_type, spec


class _Inline:
    def __init__(self, spec: str, body: str, fold: bool) -> None:
        self.spec, self.fold = spec, fold
        if not (body.startswith("{") and body.endswith("}")):
            raise TableError(f"{spec}: need inline:{{key=value, ...}}")
        self._data: dict[str, str] = {}
        for element in split_list(body[1:-1]):
            if element.startswith("{") and element.endswith("}"):
                element = element[1:-1]
            key, sep, value = element.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise TableError(f"{spec}: need \"key=value\" instead of \"{element}\"")
            self._data.setdefault(key.lower() if fold else key, value)

    def lookup(self, key: str) -> str | None:
        return self._data.get(key.lower() if self.fold else key)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._data.items())


class _Static:
    def __init__(self, spec: str, value: str) -> None:
        self.spec = spec
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].strip()
        self.value = value

    def lookup(self, key: str) -> str | None:
        return self.value

    def items(self) -> list[tuple[str, str]]:
        raise TableError(f"{self.spec}: table does not support listing its entries")


class _UnixPasswd:
    def __init__(self, spec: str, name: str) -> None:
        self.spec = spec
        if name != "passwd.byname":
            raise TableError(f"{spec}: unknown unix table name (only passwd.byname)")

    def lookup(self, key: str) -> str | None:
        if "@" in key or not key:
            return None           # login names have no domain: spare the NSS round trip
        try:
            pw = pwd.getpwnam(key)
        except (KeyError, ValueError):
            return None
        return ":".join((pw.pw_name, pw.pw_passwd, str(pw.pw_uid), str(pw.pw_gid),
                         pw.pw_gecos, pw.pw_dir, pw.pw_shell))

    def items(self) -> list[tuple[str, str]]:
        raise TableError(f"{self.spec}: table does not support listing its entries")


class _Texthash:
    def __init__(self, spec: str, path: str, fold: bool) -> None:
        self.spec, self.path, self.fold = spec, path, fold
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            text = source_parser.read_source_file(self.path)
        except OSError as exc:
            raise TableError(f"open {self.path}: {exc.strerror}") from None
        parsed = source_parser.parse_source(text, self.path, fold_case=self.fold)
        for warning in parsed.warnings:
            maillog.warning(warning)
        self._data = {entry.key: entry.value for entry in parsed.entries}
        self._stamp = stamp

    def lookup(self, key: str) -> str | None:
        self._load()
        return self._data.get(key.lower() if self.fold else key)

    def items(self) -> list[tuple[str, str]]:
        self._load()
        return sorted(self._data.items())


class _Lmdb:
    def __init__(self, spec: str, path: str, fold: bool) -> None:
        self.spec = spec
        self.table = LmdbTable(path + ".lmdb", fold=fold)

    def lookup(self, key: str) -> str | None:
        return self.table.lookup(key)

    def items(self) -> list[tuple[str, str]]:
        return self.table.items()


_PATTERN_TYPES: dict[str, Syntax] = {"regexp": REGEXP, "pcre": PCRE, "cidr": CIDR}
_cache: dict[tuple[str, bool], Table] = {}
_warned: set[str] = set()


def _open(spec: str, fold: bool) -> Table:
    kind, name = split_spec(spec)
    if kind == "proxy":
        return _open(name, fold)
    if kind in LMDB_ALIASES:
        if kind != "lmdb" and kind not in _warned:
            _warned.add(kind)
            maillog.warning(f"{kind}: tables are read as lmdb here: using {name}.lmdb for {spec}")
        if not name:
            raise TableError(f"{spec}: missing table file name")
        return _Lmdb(spec, name, fold)
    if kind == "texthash":
        return _Texthash(spec, name, fold)
    if kind in _PATTERN_TYPES:
        return PatternTable(spec, name, _PATTERN_TYPES[kind])
    if kind == "inline":
        return _Inline(spec, name, fold)
    if kind == "static":
        return _Static(spec, name)
    if kind == "unix":
        return _UnixPasswd(spec, name)
    raise TableError(f"unsupported dictionary type: {kind} (in {spec})")


def open_table(spec: str, *, fold: bool = True, warn: bool = True) -> Table:
    """The table for a ``type:name`` spec, opened once per process; with
    ``warn``, a table that cannot be opened is also named in the log."""
    spec = spec.strip()
    table = _cache.get((spec, fold))
    if table is None:
        try:
            table = _open(spec, fold)
        except TableError as exc:
            if warn:
                maillog.warning(unavailable(spec, exc))
            raise
        _cache[(spec, fold)] = table
    return table


def unavailable(spec: str, exc: TableError) -> str:
    """Why a table is not there, in Postfix's words."""
    return f"{spec} is unavailable. {exc}"


def lookup_in_maps(specs: list[str], key: str, *, fold: bool = True, warn: bool = True) -> str | None:
    """The value from the first table (in order) that has ``key``."""
    for spec in specs:
        value = open_table(spec, fold=fold, warn=warn).lookup(key)
        if value is not None:
            return value
    return None


def clear_cache() -> None:
    """Forget opened tables (tests; a daemon never needs this)."""
    for table in _cache.values():
        if isinstance(table, _Lmdb):
            table.table.close()
    _cache.clear()
    _warned.clear()
