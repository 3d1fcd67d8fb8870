"""bounce: turn one BounceRequest into a notice submitted through cleanup.

Reads the queue file named in the request (``<queue_name>/<queue_id>``,
relative to the queue directory, our working directory) with
:mod:`postpy.queue.qfile`: the envelope, the newest ``L`` record of each
requested recipient (the reason; qmgr's ``warned`` markers are skipped),
and as much of the content as the notice returns.  The notice is composed by :mod:`postpy.bounce.dsn` and submitted
through cleanup (``private/cleanup``, :class:`postpy.cleanup.client.CleanupClient`)
with ``origin=bounce``.  bounce never changes the original queue file:
qmgr alone records results and removes it.

Who is told (the loop rules):

- Normally the original sender, from the null sender ``<>``, so that a
  notice that cannot be delivered is never answered by another notice to
  the sender (RFC 5321 section 4.5.5).
- A failure of a message from ``<>`` (a notice that bounced): a
  ``postmaster`` notice goes to ``2bounce_notice_recipient`` with the
  sender ``double-bounce@$myorigin``.  Postfix sends these only when
  ``notify_classes`` includes ``2bounce``; postpy always sends them (the
  issue asks for it) -- once, because of the next rule.
- A message whose sender is the double-bounce address gets no notice at
  all: the request is answered ``ok`` and the discard is logged.
- Delay and success notices about a message from ``<>`` go to nobody.
- Each recipient's DSN NOTIFY is honoured (:func:`postpy.bounce.dsn.wants_notice`);
  when no recipient is left to report, the answer is ``ok`` with no notice
  (queue_id ``""``).

Answers: ``ok`` with the notice's queue ID, or ``temp`` (with text) when
the queue file cannot be read or cleanup did not accept the notice; qmgr
keeps the message and asks again later.

Log lines (Postfix's, COMPAT.md section 6)::

    ID: sender non-delivery notification: NEWID
    ID: sender delay notification: NEWID
    ID: sender delivery status notification: NEWID
    ID: postmaster non-delivery notification: NEWID
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from postpy.bounce import dsn, texts
from postpy.cleanup.client import CleanupClient, CleanupUnavailable
from postpy.config.maincf import Config
from postpy.ipc import codec
from postpy.ipc.messages import BounceRequest, BounceResult, Rcpt
from postpy.queue import qfile
from postpy.queue.layout import MESSAGE_QUEUES
from postpy.queue.qid import is_queue_id
from postpy.util import maillog

KINDS = (texts.FAILURE, texts.DELAY, texts.SUCCESS)
BOOKKEEPING_ACTIONS = frozenset({"warned"})
LOG_NAMES = {
    texts.FAILURE: "sender non-delivery notification",
    texts.DELAY: "sender delay notification",
    texts.SUCCESS: "sender delivery status notification",
    texts.POSTMASTER: "postmaster non-delivery notification",
}


@dataclass
class BounceSettings:
    myhostname: str
    myorigin: str
    mail_name: str = "postpy"
    double_bounce_recipient: str = "postmaster"     # 2bounce_notice_recipient
    bounce_size_limit: int = 50000
    maximal_queue_lifetime: float = 5 * 86400
    timeout: float = 3600.0
    max_frame: int = codec.DEFAULT_MAX_FRAME
    cleanup_path: str = "private/cleanup"

    @classmethod
    def from_config(cls, cfg: Config) -> BounceSettings:
        return cls(
            myhostname=cfg.get("myhostname"), myorigin=cfg.get("myorigin"),
            mail_name=cfg.get("mail_name"),
            double_bounce_recipient=cfg.get("2bounce_notice_recipient"),
            bounce_size_limit=cfg.get_size("bounce_size_limit"),
            maximal_queue_lifetime=cfg.get_time("maximal_queue_lifetime"),
            timeout=cfg.get_time("ipc_timeout"), max_frame=cfg.get_size("ipc_max_frame"),
        )

    @property
    def double_bounce_sender(self) -> str:
        return f"double-bounce@{self.myorigin}"


@dataclass
class Addressing:
    """Who the notice goes to, and from which envelope sender."""

    kind: str            # texts kind of the notice (POSTMASTER for double bounces)
    to: str
    sender: str


class BounceFailure(Exception):
    """The request cannot be served now; the text goes back to qmgr."""


def is_double_bounce(sender: str, settings: BounceSettings) -> bool:
    lower = sender.lower()
    return lower in (settings.double_bounce_sender.lower(), "double-bounce")


def addressing(kind: str, sender: str, settings: BounceSettings) -> Addressing | None:
    """Apply the loop rules of the module docstring; None: tell nobody."""
    if is_double_bounce(sender, settings):
        return None
    if sender:
        return Addressing(kind, sender, "")
    if kind == texts.FAILURE:
        return Addressing(texts.POSTMASTER, settings.double_bounce_recipient,
                          settings.double_bounce_sender)
    return None


def check_request(req: BounceRequest) -> None:
    if req.kind not in KINDS:
        raise BounceFailure(f"unknown notice kind {req.kind!r}")
    if req.queue_name not in MESSAGE_QUEUES:
        raise BounceFailure(f"bad queue name {req.queue_name!r}")
    if not is_queue_id(req.queue_id):
        raise BounceFailure(f"bad queue ID {req.queue_id!r}")


def read_prefix(chunks: Iterator[bytes], want: int) -> bytes:
    """The first ``want`` bytes (all when ``want`` is 0) from ``chunks``."""
    parts: list[bytes] = []
    have = 0
    for chunk in chunks:
        parts.append(chunk)
        have += len(chunk)
        if want and have >= want:
            break
    data = b"".join(parts)
    return data[:want] if want else data


def reported(env: qfile.Envelope, indexes: list[int], kind: str) -> list[dsn.ReportedRecipient]:
    """The requested recipients who asked for this kind of notice, with reasons."""
    # The newest result per recipient.  qmgr's own bookkeeping records
    # (action "warned": a delay notice went out) are not results.
    last = {entry.index: entry for entry in env.log if entry.action not in BOOKKEEPING_ACTIONS}
    out: list[dsn.ReportedRecipient] = []
    for index in dict.fromkeys(indexes):            # in order, without repeats
        if not 0 <= index < len(env.recipients):
            raise BounceFailure(f"{env.queue_id}: no recipient #{index}")
        rcpt = env.recipients[index]
        if not dsn.wants_notice(kind, rcpt.notify):
            continue
        entry = last.get(index)
        out.append(dsn.ReportedRecipient(
            rcpt.address, entry.action if entry else "", entry.dsn if entry else "",
            entry.text if entry else "", rcpt.orig, rcpt.orcpt))
    return out


def build_report(req: BounceRequest, settings: BounceSettings,
                 now: float) -> tuple[dsn.Report | None, Addressing | None]:
    """Read the queue file and decide.

    (report, addressing) for a notice to send; (None, addressing) when no
    recipient asked for one; (None, None) when nobody may be told.
    """
    path = os.path.join(req.queue_name, req.queue_id)
    try:
        env = qfile.read_envelope(path)
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        raise BounceFailure(f"{req.queue_id}: queue file {path} not found") from None
    except qfile.CorruptQueueFile as exc:
        raise BounceFailure(f"{req.queue_id}: corrupt queue file {path}: {exc}") from None
    except OSError as exc:
        raise BounceFailure(f"{req.queue_id}: cannot read {path}: {exc.strerror}") from None
    who = addressing(req.kind, env.sender, settings)
    if who is None:
        return None, None
    recipients = reported(env, req.indexes, req.kind)
    if not recipients:
        return None, who
    limit = settings.bounce_size_limit
    try:
        prefix = read_prefix(qfile.read_content(path, env), limit + 1 if limit else 0)
    except (OSError, qfile.CorruptQueueFile) as exc:
        raise BounceFailure(f"{req.queue_id}: cannot read content of {path}: {exc}") from None
    returned = dsn.returned_content(prefix, env.content_length, kind=who.kind,
                                    ret=env.attrs.get("ret", ""), limit=limit)
    report = dsn.Report(
        kind=who.kind, queue_id=req.queue_id, notice_id="", sender=env.sender, to=who.to,
        myhostname=settings.myhostname, arrival=env.arrival, now=now,
        recipients=recipients, returned=returned, mail_name=settings.mail_name,
        envid=env.attrs.get("envid", ""),
        # L records are appended just before qmgr asks, so the file's mtime is
        # the last attempt -- except in deferred/, where it is the next one.
        last_attempt=min(mtime, now),
        will_retry_until=env.arrival + settings.maximal_queue_lifetime)
    return report, who


def submit(report: dsn.Report, who: Addressing, settings: BounceSettings) -> BounceResult:
    """Send the notice through cleanup; ok with its queue ID, or temp."""
    client = CleanupClient(settings.cleanup_path, settings.timeout, settings.max_frame)
    try:
        report.notice_id = client.connect()
        data = dsn.compose(report)
        result = client.submit(who.sender, [Rcpt(who.to)], {"origin": "bounce"}, [data])
    except CleanupUnavailable as exc:
        maillog.warning(f"{report.queue_id}: cannot submit {LOG_NAMES[report.kind]}: {exc}")
        return BounceResult("temp", "", f"4.3.0 cleanup unavailable: {exc}")
    finally:
        client.close()
    if result.status != "ok":
        maillog.warning(f"{report.queue_id}: {LOG_NAMES[report.kind]} refused by cleanup: {result.reply}")
        return BounceResult("temp", "", result.reply or "4.3.0 notice refused by cleanup")
    maillog.info(f"{report.queue_id}: {LOG_NAMES[report.kind]}: {result.queue_id}")
    return BounceResult("ok", result.queue_id, "")


def handle(req: BounceRequest, settings: BounceSettings, now: float | None = None) -> BounceResult:
    """Serve one request; never raises for a bad request or a missing file."""
    now = time.time() if now is None else now
    try:
        check_request(req)
        report, who = build_report(req, settings, now)
    except BounceFailure as exc:
        maillog.warning(str(exc))
        return BounceResult("temp", "", str(exc))
    if report is None or who is None:
        if who is None and req.kind == texts.FAILURE:
            maillog.info(f"{req.queue_id}: undeliverable postmaster notification discarded")
        return BounceResult("ok", "", "no notice")
    return submit(report, who, settings)
