"""qmgr's view of one message in the active queue, and what delivery
results mean for its queue file.

:func:`outcome` is pure: it turns an agent's :class:`RecipientResult`
list into status-byte changes and ``L`` records, which qmgr then writes
with one fsync (:func:`postpy.queue.qfile.record_results`).
"""

from __future__ import annotations

import os
import time

from postpy.ipc.messages import RecipientResult
from postpy.queue import qfile
from postpy.queue.layout import ACTIVE


class ActiveMessage:
    def __init__(self, queue_id: str, env: qfile.Envelope) -> None:
        self.queue_id = queue_id
        self.env = env
        self.active_time = time.time()
        self.outstanding = 0
        self.gone = False          # removed from active/ by someone else (postsuper)
        self.path = os.path.join(ACTIVE, queue_id)


def outcome(msg: ActiveMessage, results: list[RecipientResult]
            ) -> tuple[dict[str, list[qfile.Recipient]], list[qfile.LogEntry]]:
    """What the results mean for the queue file: status changes and L records.

    Delivered: ``D``, or ``S`` when the recipient asked for a success notice
    (NOTIFY=SUCCESS, which also gets an ``L`` record for bounce to report).
    Bounced: ``B`` and a ``failed`` record.  Deferred: a ``delayed`` record.
    Results for recipients no longer pending are ignored.
    """
    by_index = {r.index: r for r in msg.env.recipients}
    entries: list[qfile.LogEntry] = []
    statuses: dict[str, list[qfile.Recipient]] = {}
    for result in results:
        rcpt = by_index.get(result.index)
        if rcpt is None or rcpt.status != qfile.PENDING:
            continue
        if result.status == "sent":
            wants = "SUCCESS" in rcpt.notify.upper().split(",")
            statuses.setdefault(qfile.SUCCESS if wants else qfile.DONE, []).append(rcpt)
            if wants:
                entries.append(qfile.LogEntry(rcpt.index, result.action or "delivered", result.dsn,
                                              result.text))
        elif result.status == "bounced":
            entries.append(qfile.LogEntry(rcpt.index, "failed", result.dsn, result.text))
            statuses.setdefault(qfile.BOUNCED, []).append(rcpt)
        else:
            entries.append(qfile.LogEntry(rcpt.index, "delayed", result.dsn, result.text))
    return statuses, entries
