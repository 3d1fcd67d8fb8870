"""cleanup(8): the one program that creates queue files.

master starts it on demand (``cleanup unix - - n - 0 cleanup``: as many
processes as there are clients), each one serving one connection on
``private/cleanup`` at a time through the skeleton's single_server loop
(:func:`postpy.server.skeleton.run_sync_server`).  It runs as mail_owner,
may be chrooted to the queue directory, and only ever writes
``incoming/`` (queue-relative paths).

Clients: smtpd, pickup, bounce, local (forwarding).  The conversation and
what cleanup does with the message are in :mod:`postpy.cleanup.session`;
the envelope rules in :mod:`postpy.cleanup.envelope`; header processing in
:mod:`postpy.cleanup.headers`; address rewriting (canonical maps,
masquerading, virtual aliases) in :mod:`postpy.cleanup.address_mapping`;
header_checks and body_checks in :mod:`postpy.cleanup.checks`.

Leftovers of a kill -9: a cleanup process that dies mid-message leaves
``incoming/.ID.tmp`` (never a file with a final name).  Every cleanup
process removes such files when it starts, if the process that created
them (its pid is part of the queue ID) is gone or the file is older than
``daemon_timeout``; files of live cleanup processes are left alone.
"""

from __future__ import annotations

import os
import socket
import time

from postpy.cleanup.checks import CheckSettings
from postpy.cleanup.session import CleanupSettings, serve
from postpy.queue import qid
from postpy.server import skeleton
from postpy.server.skeleton import ServerContext
from postpy.util import maillog


def remove_stale_temp_files(directory: str, max_age: float, now: float | None = None) -> list[str]:
    """Remove ``.ID.tmp`` files whose writer is gone; return their names."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError as exc:
        maillog.warning(f"scan {directory}: {exc.strerror}")
        return removed
    for name in names:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        path = os.path.join(directory, name)
        queue_id = name[1:-4]
        try:
            age = now - os.lstat(path).st_mtime
        except FileNotFoundError:
            continue
        writer_alive = qid.creator_alive(queue_id)
        if writer_alive and age < max_age:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            maillog.warning(f"remove {path}: {exc.strerror}")
            continue
        removed.append(name)
        maillog.info(f"{queue_id}: removed unfinished queue file {path}")
    return removed


def main() -> None:
    time.localtime()    # load the time zone now: /etc/localtime is not inside a chroot
    # The check tables are read before a chroot (kept if their files are out of sight).
    ctx = skeleton.prepare("cleanup", before_jail=lambda c: CheckSettings.from_config(c.cfg).open_tables())
    settings = CleanupSettings.from_config(ctx.cfg)
    remove_stale_temp_files(settings.incoming, ctx.cfg.get_time("daemon_timeout"))

    def handler(_ctx: ServerContext, conn: socket.socket) -> None:
        serve(conn, settings, peer="client")

    skeleton.run_sync_server(ctx, handler)
