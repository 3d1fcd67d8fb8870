"""pickup: return a local submission that can never be handed to cleanup.

A maildrop file whose envelope does not fit in one ipc frame to cleanup
(``ipc_max_frame``: in practice, tens of thousands of recipients) would be
refused by cleanup on every attempt.  It is a permanent failure, as a
message cleanup refuses as too big is: pickup sends the sender a
non-delivery notice (:func:`postpy.bounce.dsn.compose`, from the null
sender, through cleanup like any notice) and removes the file.  The notice
names the first :data:`REPORTED_RECIPIENTS` recipients, each with the
reason, which gives the count; it returns the message's header block.

Returns whether the notice was queued (``ok``), could not be sent now
(``temp``: cleanup unreachable; the file stays and is tried again later),
or can never be sent (``perm``: the null sender, or a sender too long to
address a notice to; the caller keeps the file in ``corrupt/``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from postpy.bounce import dsn, texts
from postpy.cleanup.client import CleanupClient, CleanupUnavailable
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEnvelope, Rcpt
from postpy.queue import maildrop
from postpy.util import maillog

REPORTED_RECIPIENTS = 100
TOO_LARGE = "5.5.3"             # RFC 3463: too many recipients


@dataclass
class NoticeSettings:
    cleanup_socket: str
    timeout: float
    max_frame: int
    myhostname: str
    mail_name: str
    bounce_size_limit: int


def reason(sub: maildrop.Submission, length: int, limit: int) -> str:
    return (f"message envelope too large for this mail system: {len(sub.recipients)} "
            f"recipients in {length} bytes (the limit is {limit} bytes); "
            f"send it to fewer recipients at a time")


def return_to_sender(fd: int, sub: maildrop.Submission, st: os.stat_result, why: str,
                     settings: NoticeSettings) -> str:
    """Send the failure notice for ``sub``; ``ok``, ``temp`` or ``perm``."""
    if not sub.sender:
        return "perm"
    envelope = CleanupEnvelope("", [Rcpt(sub.sender)], {"origin": "bounce"})
    if codec.frame_length(envelope) > settings.max_frame // 2:
        return "perm"
    # The header block only, as cleanup returns what it refuses, within
    # bounce_size_limit (or one frame's worth when that is 0: no limit).
    limit = settings.bounce_size_limit or codec.DEFAULT_MAX_FRAME
    prefix = b"".join(maildrop.read_content(fd, sub, limit=limit))
    returned = dsn.returned_content(prefix, sub.content_length, kind=texts.FAILURE,
                                    ret="HDRS", limit=limit)
    recipients = [dsn.ReportedRecipient(r.address, "failed", TOO_LARGE, why, "", r.orcpt)
                  for r in sub.recipients[:REPORTED_RECIPIENTS]]
    client = CleanupClient(settings.cleanup_socket, settings.timeout, settings.max_frame)
    try:
        notice_id = client.connect()
        report = dsn.Report(
            kind=texts.FAILURE, queue_id=notice_id, notice_id=notice_id, sender=sub.sender,
            to=sub.sender, myhostname=settings.myhostname, arrival=st.st_mtime, now=time.time(),
            recipients=recipients, returned=returned, mail_name=settings.mail_name,
            envid=sub.attrs.get("envid", ""))
        result = client.submit(envelope.sender, envelope.recipients, envelope.attrs,
                               [dsn.compose(report)])
    except CleanupUnavailable as exc:
        maillog.warning(f"maildrop/{sub.name}: cannot return to sender: {exc}")
        return "temp"
    finally:
        client.close()
    if result.status != "ok":
        maillog.warning(f"{result.queue_id}: maildrop/{sub.name}: notice to the sender "
                        f"refused by cleanup: {result.reply}")
        return "temp" if result.status == "temp" else "perm"
    maillog.info(f"{notice_id}: sender non-delivery notification: maildrop/{sub.name} "
                 f"uid={sub.uid} from=<{sub.sender}>: {TOO_LARGE} {why}")
    return "ok"
