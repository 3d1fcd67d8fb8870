"""postsuper: queue maintenance for the superuser (Postfix's postsuper(1)).

Usage::

    postsuper [-psv] [-c config_dir] [-d queue_id] [-h queue_id] [-H queue_id]
              [-r queue_id] [queue ...]

Each of ``-d``, ``-h``, ``-H`` and ``-r`` may be given several times.  A
``queue_id`` is one ID, ``ALL`` (every message in the queues concerned) or
``-`` (IDs read from standard input, separated by white space, e.g. from
``mailq`` output piped through awk).  The ``queue`` arguments narrow the
queues searched; without them each operation uses its defaults:

====  ================================  ===================  ======================
flag  searches by default                moves to            log line / summary
====  ================================  ===================  ======================
-d    hold incoming active deferred      (removed)           ``ID: removed``,
                                                             ``Deleted: N messages``
-h    incoming active deferred           hold/               ``ID: placed on hold``
-H    hold                               deferred/           ``ID: released from hold``
-r    hold incoming active deferred      maildrop/           ``ID: requeued``
====  ================================  ===================  ======================

``-s`` (structure check) and ``-p`` (purge) run first, then the operations
in the order delete, hold, release, requeue.  An ID that is in none of the
queues is skipped silently, as with Postfix.  Per-message lines go to the
mail log (and to stderr when it is a terminal); the ``Deleted: N
message(s)`` style summaries go to stderr and the log, only when N > 0.

- ``-H`` gives the released file a modification time of now (a deferred
  file's mtime is its next retry time), so qmgr takes it at its next scan,
  and asks qmgr for one at once (``public/qmgr``, FLUSH trigger).
- ``-r`` moves the file to ``maildrop/``, as Postfix does, and wakes
  pickup, which feeds it to cleanup again: addresses are rewritten anew,
  recipients already delivered are left out, and the message gets a new
  queue ID and arrival time.  The file keeps its owner (mail_owner), so
  pickup logs it as submitted by mail_owner's uid, and only the DSN
  attributes pickup accepts from any submission survive (client
  information does not).  Recipients whose failure or success notice was
  still owed are not requeued.
- ``-s``: in incoming, active, deferred and hold, a file whose name is not
  a queue ID or that does not parse (:func:`postpy.queue.qfile.read_envelope`)
  is moved to ``corrupt/`` with a log line; temporary ``.ID.tmp`` files
  older than an hour are removed.  (Postfix's renaming of files to match
  their inode number has no equivalent: our IDs do not depend on inodes.)
- ``-p``: temporary files in maildrop, incoming, active, deferred and hold
  are removed when their writer (the pid encoded in the ID) is gone or
  they are older than an hour.
- ``-e``, ``-f`` and ``-S`` are not implemented (usage error).

Files in ``active/`` belong to a running qmgr: an operation on one takes
effect on disk at once; qmgr treats the file's disappearance as the end of
that message.

Privileges: root, or mail_owner; run by root, postsuper drops to
mail_owner before it touches the queue, so files keep their owner.  In the
embedded (non-root) mode the owner of ``queue_directory`` may use it too.
Anyone else gets ``postsuper: fatal: use of this command is reserved for
the superuser`` and exit status 1 (Postfix's status for fatal errors).
Exit status: 0 on success, 1 for fatal errors, 64 (EX_USAGE) for bad
options.
"""

from __future__ import annotations

import getopt
import os
import pwd
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postpy.config.maincf import ConfigError, load_config
from postpy.ipc.trigger import FLUSH, WAKEUP, send_trigger
from postpy.queue import qfile, qid
from postpy.queue.layout import (
    ACTIVE,
    DEFERRED,
    HOLD,
    INCOMING,
    MAILDROP,
    MESSAGE_QUEUES,
    list_queue,
    quarantine,
)
from postpy.util import maillog, privs
from postpy.util.sysexits import EX_USAGE

USAGE = ("usage: postsuper [-psv] [-c config_dir] [-d queue_id] [-h queue_id] "
         "[-H queue_id] [-r queue_id] [queue...]")
TEMP_MAX_AGE = 3600.0
STRUCTURE_QUEUES = (INCOMING, ACTIVE, DEFERRED, HOLD)
TEMP_QUEUES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD)
QMGR_SOCKET = "public/qmgr"
PICKUP_SOCKET = "public/pickup"


class UsageError(Exception):
    """Bad command line; exit EX_USAGE."""


class Fatal(Exception):
    """Cannot continue; exit 1."""


@dataclass(frozen=True)
class Operation:
    flag: str
    sources: tuple[str, ...]        # default queues searched
    destination: str | None         # None: the file is removed
    logged: str                     # "ID: <logged>"
    summary: str                    # "<summary>: N message(s)"


DELETE = Operation("d", (HOLD, INCOMING, ACTIVE, DEFERRED), None, "removed", "Deleted")
PUT_ON_HOLD = Operation("h", (INCOMING, ACTIVE, DEFERRED), HOLD, "placed on hold", "Placed on hold")
RELEASE = Operation("H", (HOLD,), DEFERRED, "released from hold", "Released from hold")
REQUEUE = Operation("r", (HOLD, INCOMING, ACTIVE, DEFERRED), MAILDROP, "requeued", "Requeued")
OPERATIONS = (DELETE, PUT_ON_HOLD, RELEASE, REQUEUE)       # the order they run in


@dataclass
class Options:
    config_dir: str | None = None
    ids: dict[str, list[str]] = field(default_factory=dict)   # flag -> IDs, "ALL", "-"
    structure: bool = False
    purge: bool = False
    verbose: int = 0
    queues: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    try:
        flags, args = getopt.getopt(list(argv), "c:d:h:H:r:psv")
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from None
    opts = Options(queues=args)
    for flag, value in flags:
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-s":
            opts.structure = True
        elif flag == "-p":
            opts.purge = True
        elif flag == "-v":
            opts.verbose += 1
        else:
            opts.ids.setdefault(flag[1], []).append(value)
    for queue in args:
        if queue not in MESSAGE_QUEUES:
            raise UsageError(f"invalid queue name: {queue}")
    if not (opts.ids or opts.structure or opts.purge):
        raise UsageError("nothing to do")
    return opts


def valid_id(name: str) -> bool:
    """A name that can only be a file directly inside a queue directory."""
    return bool(name) and len(name) <= 100 and "/" not in name and not name.startswith(".") \
        and "\0" not in name


# -- authorization ------------------------------------------------------------------

def authorize(mail_owner: str, queue_directory: str) -> None:
    """Root, mail_owner, or (embedded mode) the owner of the queue directory."""
    euid = os.geteuid()
    if euid == 0:
        return
    try:
        if pwd.getpwuid(euid).pw_name == mail_owner:
            return
    except KeyError:
        pass
    try:
        if os.stat(queue_directory).st_uid == euid:
            return
    except OSError:
        pass
    raise Fatal("use of this command is reserved for the superuser")


# -- the work ----------------------------------------------------------------------

class Super:
    """Queue operations, run with the queue directory as working directory."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo                 # per-message lines on a terminal
        self.counts: dict[str, int] = {}
        self.touched: set[str] = set()   # directories to fsync at the end
        self._stdin: list[str] | None = None

    def note(self, text: str) -> None:
        maillog.info(text)
        self.echo(text)

    def stdin_ids(self) -> list[str]:
        if self._stdin is None:
            self._stdin = sys.stdin.read().split()
        return self._stdin

    # -- one file --------------------------------------------------------------------
    def apply(self, op: Operation, queue: str, queue_id: str) -> bool:
        """Do ``op`` to ``queue/queue_id``; False when the file is not there."""
        src = os.path.join(queue, queue_id)
        try:
            if op.destination is None:
                os.unlink(src)
            else:
                dst = os.path.join(op.destination, queue_id)
                os.lstat(src)            # FileNotFoundError: not in this queue
                if os.path.lexists(dst):
                    maillog.warning(f"{queue_id}: {dst} already exists; {src} left where it is")
                    return False
                if op is RELEASE:
                    os.utime(src)        # a deferred file's mtime is its retry time: now
                os.rename(src, dst)
                self.touched.add(op.destination)
        except FileNotFoundError:
            return False
        except OSError as exc:
            maillog.warning(f"{queue_id}: cannot {op.logged.split()[0]} {src}: {exc.strerror}")
            return False
        self.touched.add(queue)
        self.counts[op.summary] = self.counts.get(op.summary, 0) + 1
        self.note(f"{queue_id}: {op.logged}")
        return True

    def run_operation(self, op: Operation, ids: list[str], queues: list[str]) -> None:
        sources = [q for q in (queues or op.sources) if q != op.destination]
        for value in ids:
            if value == "ALL":
                for queue in sources:
                    for queue_id in list_queue(".", queue):
                        self.apply(op, queue, queue_id)
                continue
            for queue_id in (self.stdin_ids() if value == "-" else [value]):
                if not valid_id(queue_id):
                    maillog.warning(f"invalid mail queue id: {queue_id[:100]!r}")
                    continue
                for queue in sources:
                    if self.apply(op, queue, queue_id):
                        break

    # -- -s and -p -------------------------------------------------------------------
    def purge_temp_files(self, queues: Sequence[str], *, writer_gone: bool,
                         now: float | None = None) -> int:
        """Remove ``.NAME.tmp`` files older than an hour (or whose writer is gone)."""
        now = time.time() if now is None else now
        removed = 0
        for queue in queues:
            try:
                names = os.listdir(queue)
            except OSError:
                continue
            for name in names:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                path = os.path.join(queue, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                old = now - st.st_mtime > TEMP_MAX_AGE
                if not (old or (writer_gone and not qid.creator_alive(name[1:-4]))):
                    continue
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed += 1
                self.touched.add(queue)
                self.note(f"removed temporary file {path}")
        return removed

    def check_structure(self) -> int:
        """Quarantine badly named or unreadable files; the number moved to corrupt/."""
        moved = 0
        for queue in STRUCTURE_QUEUES:
            for name in list_queue(".", queue):
                path = os.path.join(queue, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    maillog.warning(f"{path}: unexpected directory in the queue; left alone")
                    continue
                reason = ""
                if not stat.S_ISREG(st.st_mode):
                    reason = "not a regular file"
                elif not qid.is_queue_id(name):
                    reason = "file name is not a queue ID"
                else:
                    try:
                        qfile.read_envelope(path)
                    except FileNotFoundError:
                        continue
                    except (qfile.CorruptQueueFile, OSError) as exc:
                        reason = str(exc)
                if reason:
                    quarantine(".", queue, name, reason)
                    self.touched.add(queue)
                    moved += 1
        self.purge_temp_files(STRUCTURE_QUEUES, writer_gone=False)
        return moved

    # -- afterwards ------------------------------------------------------------------
    def sync(self) -> None:
        for directory in sorted(self.touched):
            try:
                qfile.fsync_directory(directory)
            except OSError as exc:
                maillog.warning(f"fsync {directory}: {exc.strerror}")

    def summaries(self) -> list[str]:
        out = []
        for op in OPERATIONS:
            count = self.counts.get(op.summary, 0)
            if count:
                out.append(f"{op.summary}: {count} message{'' if count == 1 else 's'}")
        return out


def run(opts: Options) -> list[str]:
    """Everything after start-up; returns the summary lines."""
    def echo(text: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"postsuper: {text}\n")

    work = Super(echo)
    if opts.structure:
        work.check_structure()
    if opts.purge:
        work.purge_temp_files(TEMP_QUEUES, writer_gone=True)
    for op in OPERATIONS:
        if op.flag in opts.ids:
            work.run_operation(op, opts.ids[op.flag], opts.queues)
    work.sync()
    if work.counts.get(RELEASE.summary):
        send_trigger(QMGR_SOCKET, FLUSH)
    if work.counts.get(REQUEUE.summary):
        send_trigger(PICKUP_SOCKET, WAKEUP)
    return work.summaries()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"postsuper: fatal: {exc}\n{USAGE}\n")
        return EX_USAGE
    logging = False
    try:
        try:
            cfg = load_config(opts.config_dir)
            queue_directory = os.path.abspath(cfg.get_path("queue_directory"))
            mail_owner = cfg.get("mail_owner")
        except ConfigError as exc:
            raise Fatal(str(exc)) from None
        authorize(mail_owner, queue_directory)
        maillog.setup_from_config("postsuper", cfg, stderr=True)
        logging = True
        try:
            os.chdir(queue_directory)
            if os.geteuid() == 0:            # act as mail_owner, like the daemons
                owner = privs.lookup_user(mail_owner)
                privs.drop_to(owner.uid, owner.gid)
        except (OSError, privs.PrivilegeError) as exc:
            raise Fatal(f"{queue_directory}: {getattr(exc, 'strerror', None) or exc}") from None
        for line in run(opts):
            maillog.info(line)
            sys.stderr.write(f"postsuper: {line}\n")
    except Fatal as exc:
        if logging:
            maillog.fatal(str(exc))          # logs, writes stderr, exits 1
        sys.stderr.write(f"postsuper: fatal: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
