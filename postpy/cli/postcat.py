"""postcat: print a queue file in readable form (Postfix's postcat(1)).

Usage::

    postcat [-behv] [-c dir] [file ...]         files named literally (stdin when none)
    postcat [-behv] [-c dir] -q queue_id ...    look the IDs up in the queues

``-q`` searches maildrop, incoming, active, deferred, hold and corrupt under
``$queue_directory``.  The file is read with :mod:`postpy.queue.qfile`, so a
file that does not parse is refused whole (``postcat: fatal: FILE: reason``,
exit 1) rather than printed in part.  Output, by default::

    *** ENVELOPE RECORDS deferred/ID ***
    message_size: 2143
    message_arrival_time: Mon Aug 25 10:11:12 2025
    sender: alice@example.org
    client_addr: 192.0.2.5                  one line per attribute
    original_recipient: Bob@example.net     when the address was rewritten
    dsn_orig_rcpt: rfc822;bob@example.net   DSN ORCPT, when given
    dsn_notify: SUCCESS,FAILURE             DSN NOTIFY, when given
    recipient: bob@example.net              status byte "-": still to deliver
    *** MESSAGE CONTENTS deferred/ID ***
    <header and body, exactly as stored>
    *** HEADER EXTRACTED deferred/ID ***
    log_record: to=<bob@example.net>, action=delayed, dsn=4.4.1 (reason)
    *** MESSAGE FILE END deferred/ID ***

A recipient whose status byte says it is finished is shown as
``done_recipient:`` (D: delivered or dropped), ``bounced_recipient:`` (B:
failed, a failure notice is owed) or ``success_recipient:`` (S: delivered,
a success notice is owed).  ``log_record:`` lines are the appended results,
oldest first.  ``-e``, ``-h`` and ``-b`` select the envelope, the header
and the body; the banners and the extracted section come with the envelope,
so ``postcat -bh -q ID`` prints the bare message.  Control characters in
envelope values are shown as ``\\xNN``.

Needs read access to the queue (root or mail_owner); changes nothing.
Exit status: 0, 1 for a missing or corrupt file, 64 (EX_USAGE) for bad
options.
"""

from __future__ import annotations

import getopt
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postpy.config.maincf import ConfigError, load_config
from postpy.queue.qfile import BOUNCED, DONE, SUCCESS, CorruptQueueFile, Envelope, read_all
from postpy.util.sysexits import EX_USAGE

USAGE = "usage: postcat [-behv] [-c config_dir] [-q] [file | queue_id ...]"
SEARCH_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
RECIPIENT_LABEL = {DONE: "done_recipient", BOUNCED: "bounced_recipient",
                   SUCCESS: "success_recipient"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UsageError(Exception):
    """Bad command line; exit EX_USAGE."""


class Fatal(Exception):
    """Cannot continue; exit 1."""


@dataclass
class Options:
    config_dir: str | None = None
    by_id: bool = False
    envelope: bool = False
    header: bool = False
    body: bool = False
    args: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    try:
        flags, args = getopt.getopt(list(argv), "bc:ehqv")
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from None
    opts = Options(args=args)
    for flag, value in flags:
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-q":
            opts.by_id = True
        elif flag == "-e":
            opts.envelope = True
        elif flag == "-h":
            opts.header = True
        elif flag == "-b":
            opts.body = True
    if not (opts.envelope or opts.header or opts.body):
        opts.envelope = opts.header = opts.body = True
    if opts.by_id and not args:
        raise UsageError("-q requires at least one queue ID")
    return opts


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def split_content(content: bytes) -> tuple[bytes, bytes]:
    """(header, body): the header ends before the first empty line."""
    if content.startswith(b"\n"):
        return b"", content[1:]
    end = content.find(b"\n\n")
    if end < 0:
        return content, b""
    return content[:end + 1], content[end + 2:]


def render(env: Envelope, content: bytes, name: str, opts: Options) -> bytes:
    """The readable form of one queue file, as bytes for stdout."""
    parts: list[bytes] = []

    def line(text: str) -> None:
        parts.append(text.encode("utf-8", "surrogateescape") + b"\n")

    def raw(data: bytes) -> None:
        if data:
            parts.append(data if data.endswith(b"\n") else data + b"\n")

    if opts.envelope:
        line(f"*** ENVELOPE RECORDS {name} ***")
        line(f"message_size: {env.content_length}")
        line(f"message_arrival_time: {time.ctime(env.arrival)}")
        line(f"sender: {_visible(env.sender)}")
        for attr, value in env.attrs.items():
            line(f"{_visible(attr)}: {_visible(value)}")
        for rcpt in env.recipients:
            if rcpt.orig:
                line(f"original_recipient: {_visible(rcpt.orig)}")
            if rcpt.orcpt:
                line(f"dsn_orig_rcpt: {_visible(rcpt.orcpt)}")
            if rcpt.notify:
                line(f"dsn_notify: {_visible(rcpt.notify)}")
            line(f"{RECIPIENT_LABEL.get(rcpt.status, 'recipient')}: {_visible(rcpt.address)}")
    if opts.header or opts.body:
        if opts.envelope:
            line(f"*** MESSAGE CONTENTS {name} ***")
        if opts.header and opts.body:
            raw(content)
        else:
            header, body = split_content(content)
            raw(header if opts.header else body)
    if opts.envelope:
        line(f"*** HEADER EXTRACTED {name} ***")
        for entry in env.log:
            address = env.recipients[entry.index].address
            line(f"log_record: to=<{_visible(address)}>, action={_visible(entry.action)}, "
                 f"dsn={_visible(entry.dsn)} ({_visible(entry.text)})")
        line(f"*** MESSAGE FILE END {name} ***")
    return b"".join(parts)


def _load(path: str, shown: str) -> tuple[Envelope, bytes]:
    try:
        return read_all(path)
    except CorruptQueueFile as exc:
        raise Fatal(f"{shown}: {exc}") from None
    except IsADirectoryError:
        raise Fatal(f"{shown}: not a regular file") from None


def find_queue_file(queue_directory: str, queue_id: str) -> tuple[Envelope, bytes, str]:
    """Search the queues for ``queue_id``; (envelope, content, "queue/ID")."""
    if not queue_id or "/" in queue_id or queue_id.startswith("."):
        raise Fatal(f"invalid queue ID: {_visible(queue_id)}")
    for _attempt in range(3):          # the file may move between queues as we look
        for queue in SEARCH_QUEUES:
            path = os.path.join(queue_directory, queue, queue_id)
            try:
                env, content = _load(path, path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise Fatal(f"open queue file {queue_id}: {exc.strerror}") from None
            return env, content, f"{queue}/{queue_id}"
    raise Fatal(f"open queue file {queue_id}: No such file or directory")


def read_stdin() -> tuple[Envelope, bytes]:
    """A queue file on stdin: copied to a private temporary file first."""
    import tempfile  # only this rare path needs it

    with tempfile.TemporaryDirectory(prefix="postcat.") as tmp:
        path = os.path.join(tmp, "stdin")
        with open(path, "wb") as fh:
            fh.write(sys.stdin.buffer.read())
        return _load(path, "stdin")


def run(opts: Options, emit: Callable[[bytes], None]) -> None:
    if opts.by_id:
        try:
            cfg = load_config(opts.config_dir)
            queue_directory = os.path.abspath(cfg.get_path("queue_directory"))
        except ConfigError as exc:
            raise Fatal(str(exc)) from None
        for queue_id in opts.args:
            env, content, name = find_queue_file(queue_directory, queue_id)
            emit(render(env, content, name, opts))
        return
    if not opts.args:
        env, content = read_stdin()
        emit(render(env, content, "stdin", opts))
        return
    for path in opts.args:
        try:
            env, content = _load(path, path)
        except OSError as exc:
            raise Fatal(f"open {path}: {exc.strerror}") from None
        emit(render(env, content, path, opts))


def main(argv: Sequence[str] | None = None) -> int:
    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv), write)
        sys.stdout.flush()
    except UsageError as exc:
        sys.stderr.write(f"postcat: fatal: {exc}\n{USAGE}\n")
        return EX_USAGE
    except Fatal as exc:
        sys.stdout.flush()
        sys.stderr.write(f"postcat: fatal: {exc}\n")
        return 1
    except BrokenPipeError:                      # postcat | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
