"""Fuzz target: queue files and maildrop submissions.

Every reader of a queue file (:func:`postpy.queue.qfile.read_envelope`,
:func:`~postpy.queue.qfile.read_all`) and pickup's strict reader of maildrop
files (:func:`postpy.queue.maildrop.open_checked` and
:func:`~postpy.queue.maildrop.read_submission`) may only ever raise
:class:`postpy.queue.qfile.CorruptQueueFile` for a bad file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import example, given

from fuzz.mutate import inputs
from postpy.queue import maildrop, qfile


def _sample(*, log: bytes = b"", status: bytes = b"-", attrs: bytes = b"Afull_name=A%0AB\n") -> bytes:
    content = b"Subject: x\n\nbody\n"
    return (b"POSTPY-Q1\nT1700000000.250000\nSalice\n" + attrs
            + b"R" + status + b"bob@example.net\tbob\trfc822;bob@example.net\tSUCCESS,FAILURE\n"
            + b"R-carol@example.org\t\t\t\n"
            + b"M%020d\n" % len(content) + content + b"E\n" + log)


SAMPLES = [
    _sample(),
    _sample(log=b"L0\tdelayed\t4.4.1\tconnection refused\nL1\tfailed\t5.1.1\tno such user\n"),
    _sample(log=b"L1\tdelivered\t2.0.0\tok\nL0\tdel", status=b"D"),
    _sample(attrs=b"Aextract=yes\nAenvid=ID1\nAret=HDRS\nAbody=8BITMIME\nAuid=0\n"),
    b"POSTPY-Q1\nT1\nS\nR-x\t\t\t\nM%020d\n\nE\n" % 0,
]

# The issue-10 crash: a 5,000-digit recipient index in an appended L record.
HUGE_INDEX = _sample(log=b"L" + b"9" * 5000 + b"\tfailed\t5.0.0\tx\n")


@pytest.fixture(scope="module")
def drop() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pp-fuzz-qf-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _write(directory: str, data: bytes) -> str:
    path = os.path.join(directory, "f")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


@given(data=inputs(SAMPLES))
@example(data=HUGE_INDEX)
@example(data=_sample(log=b"L-1\tfailed\t5.0.0\tx\n"))
@example(data=_sample().replace(b"M0", b"M9"))
def test_queue_file_readers_raise_only_corrupt_queue_file(drop: str, data: bytes) -> None:
    path = _write(drop, data)
    try:
        env, content = qfile.read_all(path)
    except qfile.CorruptQueueFile:
        return
    assert env.recipients and len(content) == env.content_length
    assert all(0 <= entry.index < len(env.recipients) for entry in env.log)


@given(data=inputs(SAMPLES))
@example(data=HUGE_INDEX)
def test_maildrop_reader_raises_only_corrupt_queue_file(drop: str, data: bytes) -> None:
    _write(drop, data)
    fd, st = maildrop.open_checked(drop, "f")
    try:
        try:
            sub = maildrop.read_submission(fd, st, "f")
        except qfile.CorruptQueueFile:
            return
        content = b"".join(maildrop.read_content(fd, sub))
    finally:
        os.close(fd)
    assert sub.recipients and len(content) == sub.content_length
    assert set(sub.attrs) <= maildrop.SUBMISSION_ATTRS
