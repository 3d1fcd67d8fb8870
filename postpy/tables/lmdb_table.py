"""The indexed table type: ``FILE.lmdb``, built atomically, read lock-free.

Written by postalias(1)/postmap(1) (and newaliases), read by every daemon
that consults ``lmdb:`` tables (local for aliases, smtpd, cleanup, ...),
through :mod:`postpy.tables.maps`.

File format: one LMDB environment in a single file (``subdir=False``), no
LMDB lock file (``lock=False``), the unnamed database only.  Keys and values
are plain UTF-8 (no trailing NUL as some Postfix maps use); bytes that are
not UTF-8 in a source survive as surrogate escapes.  Keys are stored as the
builder gives them: callers fold them to lower case unless told not to
(``-f``).  LMDB limits a key to 511 bytes (:data:`MAX_KEY_BYTES`).

Why lock-free reading is safe: a table is never changed in place.  Every
build, including postmap -i/-d updates, writes a complete new environment to
a temporary file in the same directory, fsyncs it, and renames it over
``FILE.lmdb`` (then fsyncs the directory).  A reader has either the old
inode mapped or the new one, never a half-built file.  :class:`LmdbTable`
stats the path on each lookup and re-opens when the inode or mtime changes,
so a rebuilt table takes effect at once in long-running daemons.

Writers serialise with :func:`update_lock` (flock on the current file,
re-checked after the lock is taken because the file is replaced under the
lock), and postpone SIGINT/SIGTERM/SIGHUP/SIGQUIT while they build, so an
interrupted build leaves no temporary file behind.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import lmdb

MAX_KEY_BYTES = 511
_ENCODING = ("utf-8", "surrogateescape")
_POSTPONED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


class TableError(Exception):
    """A table cannot be opened, read or written; str() says which and why."""


def encode(text: str) -> bytes:
    return text.encode(*_ENCODING)


def decode(data: bytes) -> str:
    return data.decode(*_ENCODING)


def key_problem(key: str) -> str | None:
    """Why LMDB cannot store this key, or None when it can."""
    size = len(encode(key))
    if size == 0:
        return "empty key"
    if size > MAX_KEY_BYTES:
        return f"key is {size} bytes long, the limit is {MAX_KEY_BYTES}"
    return None


# --- writing ---------------------------------------------------------------

def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(directory: str, base: str) -> str:
    """A new empty file ``.BASE.PID.RANDOM.tmp`` next to the table (mode 0600)."""
    for _ in range(100):
        path = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise OSError(17, "cannot find an unused temporary name", directory)


def _write_env(tmp: str, items: list[tuple[bytes, bytes]]) -> None:
    """Write all items into a fresh environment at ``tmp``, growing the map
    until they fit."""
    estimate = sum(len(k) + len(v) + 64 for k, v in items)
    map_size = max(1 << 20, 3 * estimate + (1 << 20))
    while True:
        env = lmdb.open(tmp, subdir=False, lock=False, map_size=map_size, max_dbs=0,
                        readahead=False, sync=True, metasync=True)
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            env.sync(True)
            return
        except lmdb.MapFullError:
            map_size *= 2
        finally:
            env.close()
        os.truncate(tmp, 0)


def build(db_path: str, items: Iterable[tuple[str, str]], *, mode: int = 0o644,
          owner: tuple[int, int] | None = None) -> int:
    """Replace ``db_path`` with a table holding exactly ``items``.

    Later duplicates overwrite earlier ones (callers apply their duplicate
    policy first).  ``owner`` (uid, gid) is applied when running as root.
    Returns the number of keys written.  Raises :class:`TableError`; the old
    table is then left as it was.
    """
    encoded: dict[bytes, bytes] = {}
    for key, value in items:
        problem = key_problem(key)
        if problem:
            raise TableError(f"{db_path}: cannot store key {key!r}: {problem}")
        encoded[encode(key)] = encode(value)
    directory = os.path.dirname(os.path.abspath(db_path))
    base = os.path.basename(db_path)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _POSTPONED)
    tmp = ""
    try:
        tmp = _create_temp(directory, base)
        _write_env(tmp, sorted(encoded.items()))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, owner[0], owner[1])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, db_path)
        tmp = ""
        _fsync_dir(directory)
    except (OSError, lmdb.Error) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TableError(f"cannot create {db_path}: {text}") from None
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return len(encoded)


@contextmanager
def update_lock(db_path: str) -> Iterator[None]:
    """Hold an exclusive lock on the table for a read-modify-replace cycle.

    The lock sits on the current ``db_path`` inode; since a writer replaces
    that inode, a waiter re-checks after it gets the lock and tries again on
    the new file.  A table that does not exist yet needs no lock: two first
    builds each rename a complete file, and the last one wins.
    """
    while True:
        try:
            fd = os.open(db_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        except OSError as exc:
            raise TableError(f"open database {db_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(db_path)
            except FileNotFoundError:
                continue
            held = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                continue
            yield
            return
        finally:
            os.close(fd)


# --- reading ---------------------------------------------------------------
#
# py-lmdb refuses to open one file twice in a process, so environments are
# shared between LmdbTable objects, keyed by (device, inode), with a count.

_envs: dict[tuple[int, int], tuple[lmdb.Environment, int]] = {}
_envs_lock = threading.Lock()


def _acquire(path: str) -> tuple[tuple[int, int, int, int], lmdb.Environment]:
    """Open ``path`` read-only; return its identity and the environment."""
    for _ in range(10):
        try:
            before = os.stat(path)
        except OSError as exc:
            raise TableError(f"open database {path}: {exc.strerror}") from None
        ident = (before.st_dev, before.st_ino, before.st_mtime_ns, before.st_size)
        with _envs_lock:
            known = _envs.get(ident[:2])
            if known is not None:
                _envs[ident[:2]] = (known[0], known[1] + 1)
                return ident, known[0]
            try:
                env = lmdb.open(path, subdir=False, lock=False, readonly=True,
                                max_dbs=0, readahead=False)
            except lmdb.Error as exc:
                raise TableError(f"open database {path}: {exc}") from None
            try:
                after = os.stat(path)
            except OSError:
                after = None
            if after is not None and (after.st_dev, after.st_ino) == ident[:2]:
                _envs[ident[:2]] = (env, 1)
                return ident, env
            env.close()             # replaced while we opened it: try again
    raise TableError(f"open database {path}: file keeps changing")


def _release(inode: tuple[int, int]) -> None:
    with _envs_lock:
        known = _envs.get(inode)
        if known is None:
            return
        env, count = known
        if count > 1:
            _envs[inode] = (env, count - 1)
        else:
            del _envs[inode]
            env.close()


class LmdbTable:
    """A read-only ``FILE.lmdb`` that follows rebuilds.

    ``path`` is the database file itself (``/etc/aliases.lmdb``).  With
    ``fold`` (the default) lookup keys are folded to lower case, matching
    tables built without ``-f``.  Raises :class:`TableError` when the file
    cannot be opened or read.
    """

    def __init__(self, path: str, *, fold: bool = True) -> None:
        self.path = path
        self.fold = fold
        self._lock = threading.Lock()
        self._ident, self._env = _acquire(path)

    def _current(self) -> lmdb.Environment:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TableError(f"open database {self.path}: {exc.strerror}") from None
        if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) != self._ident:
            ident, env = _acquire(self.path)
            _release(self._ident[:2])
            self._ident, self._env = ident, env
        return self._env

    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        if key_problem(key):
            return None
        with self._lock:
            env = self._current()
            try:
                with env.begin() as txn:
                    value = txn.get(encode(key))
            except lmdb.Error as exc:
                raise TableError(f"read database {self.path}: {exc}") from None
        return None if value is None else decode(value)

    def items(self) -> list[tuple[str, str]]:
        """Every entry, in key order."""
        with self._lock:
            env = self._current()
            try:
                with env.begin() as txn:
                    return [(decode(bytes(k)), decode(bytes(v))) for k, v in txn.cursor()]
            except lmdb.Error as exc:
                raise TableError(f"read database {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._ident:
                _release(self._ident[:2])
                self._ident = (0, 0, 0, 0)


def read_all(db_path: str) -> list[tuple[str, str]]:
    """Every entry of a table file (raises :class:`TableError`)."""
    table = LmdbTable(db_path, fold=False)
    try:
        return table.items()
    finally:
        table.close()
