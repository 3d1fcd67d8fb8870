"""The queue listing: one entry per queued message, as mailq text or JSON.

This is the one formatter of ``mailq`` / ``postqueue -p`` (the text
format of Postfix's showq) and ``postqueue -j`` (one JSON object per
message, postqueue(1)).  Readers of queue files: the showq daemon (as
mail_owner, for everyone) and postqueue's direct fallback when the mail
system is down (root or mail_owner only).  Only envelopes are read, never
message content.

Entries
-------
:func:`scan` reads ``maildrop incoming active deferred hold`` in that
order, each sorted by name (queue IDs sort by arrival).  Per message: the
queue name and ID, the arrival time (the ``T`` record; for maildrop files
their mtime), the content size (header and body bytes, as Postfix's
``message_size``), the sender, and the recipients still pending, each with
the text of its newest ``L`` record when that record says ``delayed``
(the reason a deferred recipient is waiting).  Files that vanish or do not
parse are skipped: the queue changes under a listing, and corrupt files
are pickup's and qmgr's business.  Characters that are not printable
(controls, bytes that were not UTF-8) are shown as ``?``.

maildrop files are opened as pickup opens them (no symlinks, no hard
links: :func:`postpy.queue.maildrop.open_checked`), because their owners
are untrusted local users; their secret name suffix is never shown, only
the queue ID part.

Text format (COMPAT.md section 2)
---------------------------------
A header line, then per message ``ID[*!] size arrival sender``, the
recipients indented below it, a ``(reason)`` line right-aligned before the
recipients it applies to (only when it changes; ``reason unavailable``
when it becomes empty), a blank line between messages, and the trailer
``-- N Kbytes in M Requests.``; ``Mail queue is empty`` when there is
nothing.  postpy's queue IDs are up to 17 characters, so the long-ID
column layout is the default; the short one exists for comparison with
Postfix's ``enable_long_queue_ids = no`` output.

JSON format (COMPAT.md section 3)
---------------------------------
``{"queue_name": ..., "queue_id": ..., "arrival_time": N, "message_size": N,
"forced_expire": false, "sender": ..., "recipients": [{"address": ...,
"delay_reason": ...}]}`` with exactly that key order and ``", "``/``": "``
spacing; ``delay_reason`` only when there is one.  postpy never
force-expires (no ``postsuper -f`` yet), so ``forced_expire`` is false
unless a queue file carries the attribute ``forced_expire=yes``.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from postpy.queue import maildrop, qfile
from postpy.queue.layout import ACTIVE, HOLD, MAILDROP, MESSAGE_QUEUES

STATUS_MARK = {ACTIVE: "*", HOLD: "!"}
EMPTY = "Mail queue is empty\n"
REASON_WIDTH = 76


@dataclass
class ListedRecipient:
    address: str
    delay_reason: str = ""


@dataclass
class Entry:
    queue_name: str
    queue_id: str
    arrival_time: int
    message_size: int
    sender: str
    recipients: list[ListedRecipient] = field(default_factory=list)
    forced_expire: bool = False


def printable(text: str) -> str:
    """Controls, DEL, C1 controls and undecodable bytes become ``?``."""
    if text.isprintable():
        return text
    return "".join(ch if (ch.isprintable() or ch == " ") and not 0xD800 <= ord(ch) <= 0xDFFF
                   else "?" for ch in text)


# -- reading the queue ----------------------------------------------------------

def entry_from_envelope(queue_name: str, queue_id: str, env: qfile.Envelope) -> Entry:
    # The newest *delay* reason per recipient (a delay-warning marker is not one).
    delayed = {e.index: e for e in env.log if e.action == "delayed"}
    recipients = []
    for rcpt in env.recipients:
        if rcpt.status != qfile.PENDING:
            continue
        log = delayed.get(rcpt.index)
        reason = log.text if log is not None else ""
        recipients.append(ListedRecipient(printable(rcpt.address), printable(reason)))
    return Entry(queue_name, queue_id, int(env.arrival), env.content_length,
                 printable(env.sender), recipients,
                 forced_expire=env.attrs.get("forced_expire") == "yes")


def _maildrop_entry(directory: str, name: str) -> Entry | None:
    fd, st = maildrop.open_checked(directory, name)
    try:
        sub = maildrop.read_submission(fd, st, name)
    finally:
        os.close(fd)
    recipients = [ListedRecipient(printable(r.address)) for r in sub.recipients]
    return Entry(MAILDROP, name.split(".", 1)[0], int(st.st_mtime), sub.content_length,
                 printable(sub.sender), recipients)


def read_entry(queue_directory: str, queue_name: str, name: str) -> Entry | None:
    """One message, or None when it vanished or is not a queue file.

    PermissionError propagates: the caller may not read the queue.
    """
    directory = os.path.join(queue_directory, queue_name)
    try:
        if queue_name == MAILDROP:
            return _maildrop_entry(directory, name)
        path = os.path.join(directory, name)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return entry_from_envelope(queue_name, name, qfile.read_envelope(path))
    except (FileNotFoundError, qfile.CorruptQueueFile):
        return None
    except PermissionError:
        raise
    except (OSError, ValueError):       # a file replaced under us, a bad record value
        return None


def scan(queue_directory: str, queues: Iterable[str] = MESSAGE_QUEUES) -> Iterator[Entry]:
    """Every message in ``queues``; PermissionError when a queue is unreadable."""
    for queue_name in queues:
        try:
            names = os.listdir(os.path.join(queue_directory, queue_name))
        except FileNotFoundError:
            continue
        for name in sorted(names):
            if name.startswith("."):
                continue                 # being written
            entry = read_entry(queue_directory, queue_name, name)
            if entry is not None:
                yield entry


# -- JSON -------------------------------------------------------------------------

def to_json(entry: Entry) -> str:
    """One ``postqueue -j`` line, without the newline."""
    recipients = []
    for rcpt in entry.recipients:
        item: dict[str, str] = {"address": rcpt.address}
        if rcpt.delay_reason:
            item["delay_reason"] = rcpt.delay_reason
        recipients.append(item)
    body = {
        "queue_name": entry.queue_name,
        "queue_id": entry.queue_id,
        "arrival_time": entry.arrival_time,
        "message_size": entry.message_size,
        "forced_expire": entry.forced_expire,
        "sender": entry.sender,
        "recipients": recipients,
    }
    return json.dumps(body, ensure_ascii=False)


def _typed(body: dict[str, object], key: str, kind: type) -> object:
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"queue listing: member {key} missing or not a {kind.__name__}")
    return value


def from_json(line: str | bytes) -> Entry:
    """Parse one JSON line (showq's stream); ValueError when malformed.

    Members beyond the documented ones are ignored, as postqueue(1) asks.
    """
    body = json.loads(line)
    if not isinstance(body, dict):
        raise ValueError("queue listing: not a JSON object")
    recipients = []
    for item in _typed(body, "recipients", list):  # type: ignore[attr-defined]
        if not isinstance(item, dict):
            raise ValueError("queue listing: recipient is not an object")
        reason = item.get("delay_reason", "")
        if not isinstance(reason, str):
            raise ValueError("queue listing: delay_reason is not a string")
        recipients.append(ListedRecipient(str(_typed(item, "address", str)), reason))
    return Entry(str(_typed(body, "queue_name", str)), str(_typed(body, "queue_id", str)),
                 int(_typed(body, "arrival_time", int)),  # type: ignore[call-overload]
                 int(_typed(body, "message_size", int)),  # type: ignore[call-overload]
                 str(_typed(body, "sender", str)), recipients,
                 bool(_typed(body, "forced_expire", bool)))


# -- text ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Columns:
    id_width: int
    size_width: int
    time_width: int
    header: tuple[str, str, str, str]


LONG = Columns(17, 8, 19, ("----Queue ID-----", "--Size--", "---Arrival Time----",
                           "--Sender/Recipient------"))
SHORT = Columns(11, 7, 20, ("-Queue ID-", "--Size--", "----Arrival Time----",
                            "-Sender/Recipient-------"))


def _arrival_text(arrival: int, width: int) -> str:
    # asctime() is English whatever the locale, like C's; cut as "%W.Ws" would.
    return time.asctime(time.localtime(arrival))[:width].ljust(width)


def _reason_line(reason: str) -> str:
    return " " * max(0, REASON_WIDTH - len(reason)) + f"({reason})\n"


def format_entry(entry: Entry, columns: Columns = LONG, null_sender: str = "MAILER-DAEMON") -> str:
    """The lines of one message (no separating blank line)."""
    c = columns
    ident = entry.queue_id + STATUS_MARK.get(entry.queue_name, "") + ("#" if entry.forced_expire else "")
    lines = [f"{ident:<{c.id_width}} {entry.message_size:>{c.size_width}} "
             f"{_arrival_text(entry.arrival_time, c.time_width)} {entry.sender or null_sender}\n"]
    indent = " " * (c.id_width + c.size_width + c.time_width + 3)
    previous = ""
    for rcpt in entry.recipients:
        if rcpt.delay_reason != previous:
            lines.append(_reason_line(rcpt.delay_reason or "reason unavailable"))
            previous = rcpt.delay_reason
        lines.append(f"{indent}{rcpt.address}\n")
    return "".join(lines)


def header_line(columns: Columns = LONG) -> str:
    c = columns
    ident, size, arrival, who = c.header
    return f"{ident:<{c.id_width}} {size:>{c.size_width}} {arrival:<{c.time_width}} {who}\n"


def trailer(total_size: int, count: int) -> str:
    return f"\n-- {total_size // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.\n"


def format_text(entries: Iterable[Entry], columns: Columns = LONG,
                null_sender: str = "MAILER-DAEMON") -> Iterator[str]:
    """The whole mailq output, piece by piece (streams; holds one entry)."""
    count = total = 0
    for entry in entries:
        yield header_line(columns) if count == 0 else "\n"
        yield format_entry(entry, columns, null_sender)
        count += 1
        total += entry.message_size
    yield trailer(total, count) if count else EMPTY
