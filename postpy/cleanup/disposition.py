"""cleanup: the end of a queue file whose content was inspected or judged.

:mod:`postpy.cleanup.session` calls :func:`finish` instead of
``QueueFileWriter.finish`` when :mod:`postpy.cleanup.checks` inspected the
message, or smtpd's access restrictions asked for HOLD or DISCARD (the
envelope attributes ``hold`` and ``discard``, see :func:`smtpd_verdict`);
it carries out the verdict:

- DISCARD: the unfinished file is removed; the client was told "queued"
  all the same (that is what DISCARD means) and nothing is delivered;
- REDIRECT, FILTER or BCC decided by a line after the envelope was written
  (a body line, the header of a MIME part or of an attached message): the
  file is written again with the new envelope and the content written so
  far, under the same queue ID (``.ID.tmp``; nothing has its final name
  yet, so invariant 1 holds).  Decisions from the primary headers reach
  the envelope before it is written, at no cost;
- HOLD: the file gets its final name in ``hold/`` instead of
  ``incoming/``, so qmgr never schedules it (``postsuper -H`` releases
  it); ``mailq`` shows it with ``!``.
"""

from __future__ import annotations

import os

from postpy.cleanup.checks import ContentChecks
from postpy.cleanup.envelope import CheckedEnvelope
from postpy.queue import qfile
from postpy.queue.layout import HOLD

COPY_CHUNK = 65536


def rewrite_envelope(writer: qfile.QueueFileWriter, envelope: qfile.Envelope) -> qfile.QueueFileWriter:
    """A new unfinished file for the same queue ID: ``envelope``, then the
    content ``writer`` holds.  ``writer`` is aborted."""
    with open(writer.tmp_path, "rb") as old:
        size = os.fstat(old.fileno()).st_size
        old.seek(size - writer.length)          # the content is at the end (no E record yet)
        writer.abort()                          # frees the name; the open file keeps its bytes
        new = qfile.QueueFileWriter(writer.directory, writer.queue_id, envelope)
        try:
            while chunk := old.read(COPY_CHUNK):
                new.write(chunk)
        except BaseException:
            new.abort()
            raise
    return new


def smtpd_verdict(env: CheckedEnvelope) -> tuple[bool, bool]:
    """(hold, discard) as smtpd's restrictions asked in the envelope."""
    return bool(env.attrs.get("hold")), bool(env.attrs.get("discard"))


def finish(writer: qfile.QueueFileWriter, checks: ContentChecks | None, env: CheckedEnvelope,
           arrival: float) -> str | None:
    """Finish (or drop) the file as the checks and smtpd decided; its final
    path, or None when discarded.  On an error no file is left behind."""
    hold, discard = smtpd_verdict(env)
    if discard or (checks is not None and checks.discard):
        writer.abort()
        return None
    if checks is not None and checks.envelope_pending:
        checks.apply_to(env)
        writer = rewrite_envelope(writer, qfile.Envelope(env.sender, env.recipients,
                                                         arrival=arrival, attrs=env.stored))
    if hold or (checks is not None and checks.hold):
        return writer.finish_in(os.path.join(os.path.dirname(writer.directory), HOLD))
    return writer.finish()
