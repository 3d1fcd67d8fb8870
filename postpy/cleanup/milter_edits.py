"""cleanup: apply the milters' end-of-message changes to the queue file.

Where it sits in the mail path: smtpd talks to the milters while it
streams the message to cleanup; at end of message it sends their changes
as one :class:`postpy.ipc.messages.CleanupEdits` (and a replacement body,
if any) before cleanup finishes the file.  cleanup then writes a new
unfinished file for the same queue ID -- the changed envelope, the changed
header block, the old or the new body -- and finishes that one, so the
queue file smtpd's ``250`` acknowledges is the filtered message, written
once, by cleanup alone.

Header indexes count the headers the milters saw, which are those the
client sent: the ``Received:`` header cleanup prepends is not counted,
and an inserted header never goes above it.  Headers cleanup appends
(a missing Message-ID or Date) are counted after the client's.

Envelope: CHGFROM replaces the sender; DELRCPT removes every recipient
with that address; ADDRCPT/ADDRCPT_PAR add one (NOTIFY and ORCPT taken
from the ESMTP arguments; no address rewriting).  Quarantine moves the
finished file to ``hold/`` with the milter's reason in the log.
"""

from __future__ import annotations

from collections.abc import Iterable

from postpy.cleanup.envelope import CheckedEnvelope, add_recipient
from postpy.ipc.messages import CleanupEdits, HeaderEdit
from postpy.mail.headers import Header, header_name
from postpy.queue import qfile

COPY_CHUNK = 65536


def split_headers(block: bytes) -> list[Header]:
    """Raw headers (folded lines kept) of a header block with LF line ends."""
    headers: list[Header] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] = Header(headers[-1].name, headers[-1].raw + line)
        else:
            headers.append(Header(header_name(line) or "", line))
    return headers


def _header(name: str, value: str) -> Header:
    raw = f"{name}:{value}".encode("utf-8", "surrogateescape")
    return Header(name, raw if raw.endswith(b"\n") else raw + b"\n")


def edit_headers(headers: list[Header], edits: Iterable[HeaderEdit]) -> list[Header]:
    """The header list after the edits; a leading Received: (cleanup's own)
    stays first and is not counted."""
    own = headers[:1] if headers and headers[0].is_("Received") else []
    visible = headers[len(own):]
    for edit in edits:
        if edit.op == "add":
            visible.append(_header(edit.name, edit.value))
        elif edit.op == "insert":
            visible.insert(max(0, min(edit.index, len(visible))), _header(edit.name, edit.value))
        elif edit.op == "change":
            seen = 0
            for pos, h in enumerate(visible):
                if h.is_(edit.name):
                    seen += 1
                    if seen == max(edit.index, 1):
                        if edit.value:
                            visible[pos] = _header(h.name, edit.value)
                        else:
                            del visible[pos]
                        break
            else:
                if edit.value:           # libmilter: changing a missing header adds it
                    visible.append(_header(edit.name, edit.value))
    return own + visible


def edit_envelope(env: CheckedEnvelope, edits: CleanupEdits, myorigin: str) -> None:
    if edits.sender is not None:
        env.sender = edits.sender
    gone = {a.lower() for a in edits.delete_recipients}
    if gone:
        env.recipients = [r for r in env.recipients if r.address.lower() not in gone]
    for rcpt in edits.add_recipients:
        add_recipient(env.recipients, rcpt.address, myorigin, orcpt=rcpt.orcpt, notify=rcpt.notify)
    if edits.hold:
        env.attrs["hold"] = edits.hold


def rewrite(writer: qfile.QueueFileWriter, edits: CleanupEdits, env: CheckedEnvelope,
            arrival: float, myorigin: str) -> tuple[qfile.QueueFileWriter, bytes]:
    """A new unfinished file with the edits applied (the body copied unless
    ``edits.replace_body``: the caller then writes the new one); ``writer`` is
    aborted.  Also returns the last byte written."""
    edit_envelope(env, edits, myorigin)
    with open(writer.tmp_path, "rb") as old:
        old.seek(-writer.length, 2)
        content = b""
        while (end := content.find(b"\n\n")) < 0 and not content.startswith(b"\n"):
            chunk = old.read(COPY_CHUNK)
            if not chunk:
                end = len(content)
                break
            content += chunk
        if content.startswith(b"\n"):
            end = -1
        block, rest = content[:end + 1], content[end + 2:]
        separator = end + 1 < len(content)
        writer.abort()
        headers = edit_headers(split_headers(block), edits.headers)
        new = qfile.QueueFileWriter(writer.directory, writer.queue_id,
                                    qfile.Envelope(env.sender, env.recipients, arrival=arrival,
                                                   attrs=env.stored))
        try:
            head = b"".join(h.raw for h in headers)
            new.write(head + (b"\n" if separator or edits.replace_body else b""))
            last = b"\n"
            if not edits.replace_body:
                while rest:
                    new.write(rest)
                    last = rest[-1:]
                    rest = old.read(COPY_CHUNK)
        except BaseException:
            new.abort()
            raise
    return new, last
