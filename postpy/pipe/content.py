"""pipe: the bytes a command reads on its standard input.

The message is the queue file's content (header and body, LF line ends),
read by the agent as root before anything runs.  The flags put, in this
order, in front of it:

- ``F``: ``From sender date`` (mbox's envelope line);
- ``R``: ``Return-Path: <sender>``;
- ``O``: ``X-Original-To: <original recipient>``;
- ``D``: ``Delivered-To: <recipient>`` (lower case);

and change its lines: ``.`` doubles a leading dot (as on an SMTP
connection), ``>`` quotes a leading ``From `` (mbox), ``B`` appends an
empty line.  The last line always ends with a line end, and every LF
becomes ``eol=`` (``\\r\\n`` for commands that want CRLF).

``O`` and ``D`` name one recipient, so they need requests with one
recipient (``<transport>_destination_recipient_limit = 1``); the agent
defers a request with more (:func:`single_recipient_problem`).  The null
sender is shown as ``null_sender=`` in the ``From `` line and
``Return-Path:``.
"""

from __future__ import annotations

import time

from postpy.pipe.settings import PipeSettings


def single_recipient_problem(settings: PipeSettings, count: int, transport: str) -> str:
    """A text when the flags need one recipient but the request has more."""
    for flag in ("D", "O"):
        if flag in settings.flags and count > 1:
            return f"pipe flag `{flag}' requires {transport}_destination_recipient_limit = 1"
    return ""


def _from_line(sender: str, arrival: float) -> bytes:
    stamp = time.asctime(time.localtime(arrival or time.time()))
    return f"From {sender} {stamp}\n".encode("utf-8", "surrogateescape")


def build(content: bytes, settings: PipeSettings, *, sender: str, recipient: str,
          original: str, arrival: float) -> bytes:
    """The command's input (see the module docstring).  ``sender`` is as the
    command sees it (null sender already replaced)."""
    flags = settings.flags
    head: list[bytes] = []
    if "F" in flags:
        head.append(_from_line(sender, arrival))
    if "R" in flags:
        head.append(f"Return-Path: <{sender}>\n".encode("utf-8", "surrogateescape"))
    if "O" in flags:
        head.append(f"X-Original-To: {original}\n".encode("utf-8", "surrogateescape"))
    if "D" in flags:
        head.append(f"Delivered-To: {recipient.lower()}\n".encode("utf-8", "surrogateescape"))
    body = content if content.endswith(b"\n") or not content else content + b"\n"
    if "." in flags:
        body = body.replace(b"\n.", b"\n..")
        if body.startswith(b"."):
            body = b"." + body
    if ">" in flags:
        body = body.replace(b"\nFrom ", b"\n>From ")
        if body.startswith(b"From "):
            body = b">" + body
    data = b"".join(head) + body
    if "B" in flags:
        data += b"\n"
    if settings.eol != b"\n":
        data = data.replace(b"\n", settings.eol)
    return data
