"""local: the message being delivered, and the forms it is written in.

Reads the queue file named in a delivery request (queue-relative, as root,
before any privilege change: queue files are mail_owner's, mode 0600),
once per request: the content is kept in memory for all of the request's
destinations (it is at most ``message_size_limit`` bytes), so the body is
read from disk once however many mailboxes it lands in.

The forms written out (each builds one ``bytes`` for one destination):

- :func:`mbox_form` for mailboxes and ``/file`` destinations: a
  ``From sender date`` line, ``Return-Path:``, ``Delivered-To:``, the
  content with *mboxo* quoting (a line that starts with ``From `` gets a
  ``>`` in front; ``>From `` lines are left alone, as Postfix and most MTAs
  do -- readers that expect mboxrd unquote one level too many only on lines
  that were ``>From `` to begin with), a final newline if missing, and one
  empty line that separates it from the next message;
- :func:`plain_form` for Maildir (no ``From `` line, no quoting) and, with
  the ``From `` line, for commands (Postfix's local(8) gives a command the
  envelope ``From `` line, ``Return-Path:`` and, per
  ``prepend_delivered_header``, ``Delivered-To:``; procmail and friends
  expect it);
- forwarded copies get only ``Delivered-To:`` (:mod:`postpy.local.forward`).

:attr:`Message.delivered_to` holds the addresses of the ``Delivered-To:``
headers already in the message (lower case), for loop detection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from postpy.mail import address as addr
from postpy.mail.headers import HeaderBlockReader
from postpy.queue import qfile

NULL_SENDER = "MAILER-DAEMON"


@dataclass
class Message:
    queue_id: str
    sender: str
    content: bytes
    arrival: float = 0.0
    attrs: dict[str, str] = field(default_factory=dict)
    delivered_to: frozenset[str] = frozenset()


def load(path: str) -> Message:
    """Read a queue file (raises OSError, :class:`qfile.CorruptQueueFile`)."""
    env, content = qfile.read_all(path)
    return Message(env.queue_id, env.sender, content, env.arrival, dict(env.attrs),
                   delivered_to_addresses(content))


def delivered_to_addresses(content: bytes) -> frozenset[str]:
    """The ``Delivered-To:`` values of the primary header block, lower case."""
    reader = HeaderBlockReader()
    if not reader.feed(content):
        reader.close()
    found = set()
    for header in reader.headers:
        if header.is_("Delivered-To"):
            value = header.unfolded().strip()
            if value.startswith("<") and value.endswith(">"):
                value = value[1:-1].strip()
            found.add(value.lower())
    return frozenset(found)


def from_line(sender: str, when: float | None = None) -> bytes:
    """``From sender Thu Nov 28 19:20:01 2024`` (asctime in local time).

    A local part with white space is quoted, so readers that split the line
    on spaces still find the date where they look for it.
    """
    if sender:
        local, domain = addr.split_address(sender)
        shown = addr.join_address(addr.unquote_local(local), domain)
    else:
        shown = NULL_SENDER
    stamp = time.asctime(time.localtime(time.time() if when is None else when))
    return f"From {shown} {stamp}\n".encode("utf-8", "surrogateescape")


def trace_headers(sender: str | None, delivered_to: str | None) -> bytes:
    """``Return-Path: <sender>`` (when sender is not None) and ``Delivered-To:``."""
    lines = []
    if sender is not None:
        lines.append(f"Return-Path: <{sender}>\n")
    if delivered_to:
        lines.append(f"Delivered-To: {delivered_to}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def mbox_quote(content: bytes) -> bytes:
    """mboxo quoting: ``From `` at the start of a line becomes ``>From ``."""
    quoted = content.replace(b"\nFrom ", b"\n>From ")
    if quoted.startswith(b"From "):
        quoted = b">" + quoted
    return quoted


def mbox_form(msg: Message, sender: str, delivered_to: str | None,
              when: float | None = None) -> bytes:
    """The bytes appended to an mbox file for this message."""
    body = mbox_quote(msg.content)
    end = b"\n" if body.endswith(b"\n") else b"\n\n"
    return from_line(sender, when) + trace_headers(sender, delivered_to) + body + end


def plain_form(msg: Message, sender: str, delivered_to: str | None, *,
               with_from_line: bool = False, when: float | None = None) -> bytes:
    """The message with trace headers prepended (Maildir, commands)."""
    head = from_line(sender, when) if with_from_line else b""
    body = msg.content if msg.content.endswith(b"\n") or not msg.content else msg.content + b"\n"
    return head + trace_headers(sender, delivered_to) + body
