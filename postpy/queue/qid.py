"""Queue IDs: unique, sortable by arrival, short enough for mailq's column.

An ID is ``TTTTTTUUUUzPPP``: six base-51 digits of the arrival second, four
of the microsecond, the separator ``z``, then the creating process's pid in
base 51.  The digit alphabet is 0-9 and the consonants (no vowels, so an ID
never spells a word; ``z`` is kept out of it so the separator is
unambiguous) in ASCII order, so IDs sort by arrival time.  Uniqueness across
processes comes from the pid; within one process from the microsecond, which
:func:`new_queue_id` never repeats.  IDs are at most 17 characters, the width
of Postfix's long queue ID column.
"""

from __future__ import annotations

import os
import re
import time

ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy"
BASE = len(ALPHABET)
ID_PATTERN = re.compile(rf"^[{ALPHABET}]{{10}}z[{ALPHABET}]{{1,6}}\Z")  # \Z: "$" would allow a trailing newline

_last = 0


def _encode(value: int, width: int = 0) -> str:
    digits = []
    while value:
        value, rem = divmod(value, BASE)
        digits.append(ALPHABET[rem])
    text = "".join(reversed(digits)) or "0"
    return text.rjust(width, "0")


def new_queue_id(now: float | None = None) -> str:
    """A fresh queue ID for this process (strictly increasing within it)."""
    global _last
    micros = int((now if now is not None else time.time()) * 1_000_000)
    if micros <= _last:
        micros = _last + 1
    _last = micros
    seconds, usec = divmod(micros, 1_000_000)
    return f"{_encode(seconds, 6)}{_encode(usec, 4)}z{_encode(os.getpid())}"


def is_queue_id(name: str) -> bool:
    return bool(ID_PATTERN.match(name))


def arrival_of(queue_id: str) -> float:
    """The arrival time encoded in an ID."""
    value = 0
    for ch in queue_id[:10]:
        value = value * BASE + ALPHABET.index(ch)
    seconds, usec = divmod(value, BASE ** 4)
    return seconds + usec / 1_000_000


def pid_of(queue_id: str) -> int:
    """The pid of the process that created ``queue_id`` (the part after ``z``)."""
    value = 0
    for ch in queue_id.partition("z")[2]:
        value = value * BASE + ALPHABET.index(ch)
    return value


def creator_alive(name: str) -> bool:
    """Is the process that created this queue ID (or ``ID.suffix`` file name)
    still running?  Used to tell an abandoned temporary file from one being
    written."""
    queue_id = name.split(".", 1)[0]
    if not is_queue_id(queue_id):
        return False
    pid = pid_of(queue_id)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass                      # alive but not ours (or absurd): keep the file
    return True
