"""pickup: take each file out of maildrop/ and give it to cleanup.

Reads ``maildrop/`` (relative to the queue directory, our working
directory), writes nothing but ``corrupt/`` (for refused files) and the
removal of picked-up files.  Runs as mail_owner; every byte of a maildrop
file is untrusted (threat model: :mod:`postpy.queue.maildrop`).

For each name that does not start with a dot, oldest first (files left in
place by an earlier scan come after the others, see below):

1. ``lstat`` + ``open(O_NOFOLLOW|O_NONBLOCK)`` + ``fstat``: a regular file
   with one link, the same inode that was looked at
   (:func:`postpy.queue.maildrop.open_checked`).  Its owner is the
   submitter.
2. Parse it strictly through the descriptor
   (:func:`postpy.queue.maildrop.read_submission`).  Any parse error, of
   whatever kind, sends the file to ``corrupt/``: a bad file costs a log
   line, never the scan or the daemon.
3. An envelope that cannot fit in one ipc frame to cleanup
   (``ipc_max_frame``: too many recipients) can never be queued: it is
   returned to the sender and removed (:mod:`postpy.pickup.returned`).
4. Feed it to cleanup with ``origin=pickup``, ``uid=<owner>``,
   ``rewrite=yes`` and the whitelisted submission attributes; log
   ``NEWID: uid=N from=<sender>``.
5. cleanup said ``ok``: remove the file (a crash before this only
   duplicates).  A message cleanup will not accept (too big, mail loop)
   is still ``ok``: cleanup queues its header with every recipient
   already failed, so the sender gets a non-delivery notice and nothing
   loops.  ``perm`` remains only when no notice can be sent (null sender,
   no recipients): the file goes to ``corrupt/`` with a warning naming
   the reason, where the postmaster can inspect it.  ``temp``, or a
   conversation broken off: the file stays and the scan goes on with the
   next one.  cleanup unreachable: every file stays, and the scan stops
   until the next trigger (master sends one every minute).

One file never blocks the others: a file left in place is remembered, and
later scans take it after every newer file, so a submission that keeps
failing is retried on each wake-up without holding up those behind it.

Anything malformed, a symlink, a hard link or a non-regular file goes to
``corrupt/`` with a warning.  Dot files (submissions still being written)
are left alone unless they are older than :data:`STALE_TEMP_AGE`: a
sendmail killed mid-write leaves one behind, and only mail_owner can
remove it.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from enum import Enum

from postpy.cleanup import overrides
from postpy.cleanup.client import CleanupClient, CleanupUnavailable
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, Rcpt
from postpy.pickup.returned import NoticeSettings, reason, return_to_sender
from postpy.queue import layout, maildrop, qfile
from postpy.util import maillog

STALE_TEMP_AGE = 24 * 3600.0
# Envelope records read at most, in ipc frames: one byte of the frame carries
# at most three bytes of records ("%25" is sent as "%"), so more cannot fit.
ENVELOPE_FRAMES = 3


class _CleanupDown(Exception):
    """cleanup cannot be reached at all: no file can be submitted now."""


class Outcome(Enum):
    QUEUED = "queued"
    RETURNED = "returned"        # could never be queued: the sender was told, file removed
    REFUSED = "refused"          # moved to corrupt/
    GONE = "gone"                # vanished meanwhile
    RETRY = "retry"              # left in place, tried again after newer files


@dataclass
class PickupSettings:
    cleanup_socket: str = "private/cleanup"
    timeout: float = 3600.0
    max_frame: int = 1024 * 1024
    submit_users: tuple[str, ...] = ("static:anyone",)   # authorized_submit_users
    size_limit: int = 0             # message_size_limit: never stream more than this + 1
    myhostname: str = "localhost"   # for notices (returned submissions)
    mail_name: str = "postpy"
    bounce_size_limit: int = 50000
    content_filter: str = ""        # main.cf or -o on the pickup service, as for smtpd
    overrides: tuple[str, ...] = () # receive_override_options (postpy.cleanup.overrides)


class Pickup:
    def __init__(self, settings: PickupSettings, queue_directory: str = ".") -> None:
        self.settings = settings
        self.queue_directory = queue_directory
        self.directory = os.path.join(queue_directory, maildrop.MAILDROP)
        self.warned: set[str] = set()      # directories already reported
        self.retried: dict[str, int] = {}   # files left in place -> scans that left them

    def order(self, names: list[str]) -> list[str]:
        """Names to try, oldest first, but files left in place by earlier
        scans after all others (those left least often first)."""
        present = set(names)
        self.retried = {n: c for n, c in self.retried.items() if n in present}
        return sorted(names, key=lambda n: (self.retried.get(n, 0), n))

    def scan(self) -> dict[str, Outcome]:
        """One pass over maildrop/; the outcome per file name."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            maillog.warning(f"scan {self.directory}: {exc.strerror}")
            return {}
        outcomes: dict[str, Outcome] = {}
        for name in self.order(names):
            if name.startswith("."):
                self._remove_if_stale(name)
                continue
            try:
                outcome = self.pick(name)
            except _CleanupDown as exc:
                maillog.warning(f"maildrop/{name}: cannot submit to cleanup: {exc}")
                outcomes[name] = Outcome.RETRY
                break                       # not this file's fault: do not count it
            outcomes[name] = outcome
            if outcome is Outcome.RETRY:
                self.retried[name] = self.retried.get(name, 0) + 1
            else:
                self.retried.pop(name, None)
        return outcomes

    def pick(self, name: str) -> Outcome:
        if self._is_directory(name):
            return Outcome.REFUSED
        try:
            fd, st = maildrop.open_checked(self.directory, name)
        except FileNotFoundError:
            return Outcome.GONE
        except qfile.CorruptQueueFile as exc:
            return self._refuse(name, str(exc))
        except OSError as exc:
            maillog.warning(f"maildrop/{name}: {exc.strerror}")
            return Outcome.RETRY
        try:
            limit = ENVELOPE_FRAMES * self.settings.max_frame
            try:
                sub = maildrop.read_submission(fd, st, name, envelope_limit=limit)
            except qfile.CorruptQueueFile as exc:
                return self._refuse(name, str(exc))
            except Exception as exc:        # a reader bug: still only this file's problem
                return self._refuse(name, f"cannot parse: {type(exc).__name__}: {exc}"[:200])
            return self._submit(fd, st, sub)
        finally:
            os.close(fd)

    def _allowed(self, uid: int) -> bool:
        """authorized_submit_users, for the uid the kernel says wrote the file.

        sendmail checks this too, but a user may write to maildrop/ directly;
        the file's owner cannot be forged, so this is where it holds."""
        from postpy.mail.authorized import AccessError, uid_allowed

        try:
            return uid_allowed(list(self.settings.submit_users), uid, privileged=(os.geteuid(),))
        except AccessError as exc:
            maillog.warning(f"authorized_submit_users: {exc}")
            return False

    def _submit(self, fd: int, st: os.stat_result, sub: maildrop.Submission) -> Outcome:
        if not self._allowed(sub.uid):
            maillog.warning(f"maildrop/{sub.name}: uid={sub.uid}: not in authorized_submit_users")
            return self._refuse(sub.name, f"uid {sub.uid} is not in authorized_submit_users")
        attrs = dict(sub.attrs)
        attrs.update(origin="pickup", uid=str(sub.uid), rewrite="yes")
        if self.settings.content_filter:
            attrs["content_filter"] = self.settings.content_filter
        if self.settings.overrides:
            attrs["overrides"] = overrides.attribute(self.settings.overrides)
        # ``orig`` (orig_to= in delivery logs) is believed only in files of our
        # own (postsuper -r requeues queue files into maildrop/).
        trusted = sub.uid == os.geteuid()
        recipients = [Rcpt(r.address, r.orig if trusted else "", r.orcpt, r.notify)
                      for r in sub.recipients]
        settings = self.settings
        length = codec.frame_length(CleanupEnvelope(sub.sender, recipients, attrs))
        if length > settings.max_frame:
            return self._return(fd, st, sub, reason(sub, length, settings.max_frame))
        client = CleanupClient(settings.cleanup_socket, settings.timeout, settings.max_frame)
        try:
            try:
                client.connect()
            except CleanupUnavailable as exc:
                raise _CleanupDown(str(exc)) from None
            maillog.info(f"{client.queue_id}: uid={sub.uid} from=<{sub.sender}>")
            content = maildrop.read_content(fd, sub, limit=settings.size_limit)
            result = client.submit(sub.sender, recipients, attrs, content)
        except CleanupUnavailable as exc:
            maillog.warning(f"maildrop/{sub.name}: submission to cleanup broken off: {exc}; will retry")
            return Outcome.RETRY
        except qfile.CorruptQueueFile as exc:
            return self._refuse(sub.name, str(exc))
        finally:
            client.close()
        if result.status == "ok":
            try:
                os.unlink(os.path.join(self.directory, sub.name))
            except FileNotFoundError:
                pass
            except OSError as exc:   # it would be picked up again: a duplicate
                maillog.warning(f"{result.queue_id}: remove maildrop/{sub.name}: {exc.strerror}")
            return Outcome.QUEUED
        if result.status == "perm":
            maillog.warning(f"{result.queue_id}: maildrop/{sub.name} from uid={sub.uid} "
                            f"refused by cleanup: {result.reply}")
            return self._refuse(sub.name, f"refused by cleanup: {result.reply}")
        maillog.warning(f"{result.queue_id}: maildrop/{sub.name}: cleanup: {result.reply}; will retry")
        return Outcome.RETRY

    def _return(self, fd: int, st: os.stat_result, sub: maildrop.Submission, why: str) -> Outcome:
        """A submission cleanup can never take: tell the sender, remove it."""
        s = self.settings
        maillog.warning(f"maildrop/{sub.name} from uid={sub.uid}: {why}")
        notice = NoticeSettings(s.cleanup_socket, s.timeout, s.max_frame, s.myhostname,
                                s.mail_name, s.bounce_size_limit)
        try:
            status = return_to_sender(fd, sub, st, why, notice)
        except qfile.CorruptQueueFile as exc:
            return self._refuse(sub.name, str(exc))
        if status == "temp":
            return Outcome.RETRY
        if status == "perm":
            return self._refuse(sub.name, f"cannot be returned to <{sub.sender[:100]}>: {why}")
        try:
            os.unlink(os.path.join(self.directory, sub.name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            maillog.warning(f"remove maildrop/{sub.name}: {exc.strerror}")
        return Outcome.RETURNED

    def _is_directory(self, name: str) -> bool:
        """A directory in maildrop/ is nobody's mail: remove it when empty
        (we own the sticky parent), else warn once and leave it; it cannot be
        moved to corrupt/ without write access to it."""
        path = os.path.join(self.directory, name)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except FileNotFoundError:
            return False
        try:
            os.rmdir(path)
        except OSError as exc:
            if name not in self.warned:
                self.warned.add(name)
                maillog.warning(f"maildrop/{name}: a directory, not a submission: {exc.strerror}")
        return True

    def _refuse(self, name: str, reason: str) -> Outcome:
        layout.quarantine(self.queue_directory, maildrop.MAILDROP, name, reason)
        return Outcome.REFUSED

    def _remove_if_stale(self, name: str) -> None:
        path = os.path.join(self.directory, name)
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) or time.time() - st.st_mtime < STALE_TEMP_AGE:
                return
            os.unlink(path)
        except OSError:
            return
        maillog.info(f"removed stale temporary file maildrop/{name}")
