"""cleanup: one client conversation, from CleanupHello to CleanupResult.

The conversation (see :mod:`postpy.ipc.messages`)::

    cleanup -> client   CleanupHello(queue_id)
    client  -> cleanup  CleanupEnvelope(sender, recipients, attrs)
    client  -> cleanup  D frames (content, LF line ends) ... E frame
    cleanup -> client   CleanupResult(status, queue_id, reply, size)

The content is never held whole in memory.  The header block is collected
first (bounded by header_count_limit and header_size_limit), because the
envelope written at the head of the queue file depends on it (``-t``
recipients); then the queue file is created in ``incoming/`` (a path
relative to the queue directory, our working directory) with
:class:`postpy.queue.qfile.QueueFileWriter`, and the body is written chunk
by chunk as frames arrive.

Outcomes:

- ``ok`` only after ``finish()`` made the file and its directory entry
  durable; then qmgr is woken (a lost wake-up only delays the mail).
- ``perm`` for refusals (size, loop, no recipients, bad addresses); the
  rest of the content is still read, so the client gets its answer in
  order, but nothing is written.  Except for local submissions (pickup),
  where nobody waits for the answer: their header is queued with every
  recipient already failed (``ok``, "returned"), so the sender is told.
- ``temp`` for any I/O error (``4.3.0 Error: queue file write error``) and
  for protocol errors in the client; the partial file is removed.
- A client that disconnects (or times out) before ``E`` gets nothing: the
  partial file is removed and ``ID: lost connection`` is logged.

A kill -9 at any moment leaves at most a ``.ID.tmp`` file, never a file
with a final name (see :mod:`postpy.cleanup.service` for their removal).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postpy.cleanup import disposition, milter_edits
from postpy.cleanup.address_mapping import AddressMapping
from postpy.cleanup.checks import CheckSettings, ContentChecks, ContentRefusal
from postpy.cleanup.envelope import CheckedEnvelope, Refusal, check_envelope
from postpy.cleanup.headers import HeaderSettings, process_headers
from postpy.config.maincf import Config
from postpy.ipc import codec
from postpy.ipc.messages import CleanupEdits, CleanupEnvelope, CleanupHello, CleanupResult
from postpy.ipc.trigger import SCAN, send_trigger
from postpy.mail.headers import Header, HeaderBlockReader, header_name
from postpy.queue import qfile
from postpy.queue.layout import INCOMING
from postpy.queue.qid import new_queue_id
from postpy.util import maillog

WRITE_ERROR = "4.3.0 Error: queue file write error"
NO_SPACE = "4.3.1 Insufficient system storage"
TOO_BIG = "5.3.4 Message size exceeds fixed limit"


@dataclass
class CleanupSettings:
    headers: HeaderSettings
    message_size_limit: int = 10240000          # 0: no limit
    header_size_limit: int = 102400
    header_count_limit: int = 1000
    queue_minfree: int = 0
    max_frame: int = codec.DEFAULT_MAX_FRAME
    timeout: float = 3600.0
    incoming: str = INCOMING                     # relative to the queue directory
    qmgr_trigger: str = "public/qmgr"
    mapping: AddressMapping = field(default_factory=AddressMapping)   # canonical, masquerade, virtual
    checks: CheckSettings = field(default_factory=CheckSettings)      # header_checks, body_checks

    @classmethod
    def from_config(cls, cfg: Config) -> CleanupSettings:
        return cls(
            headers=HeaderSettings(
                myhostname=cfg.get("myhostname"),
                # append_at_myorigin = no: unqualified addresses stay as they are.
                myorigin=cfg.get("myorigin") if cfg.get_bool("append_at_myorigin") else "",
                mail_name=cfg.get("mail_name"), hopcount_limit=cfg.get_int("hopcount_limit")),
            message_size_limit=cfg.get_size("message_size_limit"),
            header_size_limit=cfg.get_size("header_size_limit"),
            header_count_limit=cfg.get_int("header_count_limit"),
            queue_minfree=cfg.get_size("queue_minfree"),
            max_frame=cfg.get_size("ipc_max_frame"),
            timeout=cfg.get_time("ipc_timeout"),
            mapping=AddressMapping.from_config(cfg),
            checks=CheckSettings.from_config(cfg),
        )


class Session:
    """One message from one client; :meth:`run` drives it to the end."""

    def __init__(self, sock: socket.socket, settings: CleanupSettings, peer: str = "client") -> None:
        self.sock = sock
        self.settings = settings
        self.peer = peer
        self.queue_id = new_queue_id()
        self.arrival = time.time()
        self.env: CheckedEnvelope | None = None
        self.sender = ""
        self.refusal: Refusal | None = None
        self.reader = HeaderBlockReader(settings.header_size_limit, settings.header_count_limit)
        self.writer: qfile.QueueFileWriter | None = None
        self.size = 0                   # content bytes received from the client
        self._last_byte = b""           # last content byte written (final LF check)
        self.returned = False           # refused, but queued to be returned to the sender
        self.checks: ContentChecks | None = None    # header/body checks of this message
        self._checks_ended = False      # checks.end() written before milter edits

    # -- the conversation -------------------------------------------------
    def run(self) -> CleanupResult | None:
        """Serve the conversation; the result sent, or None if the client left."""
        self.sock.settimeout(self.settings.timeout)
        try:
            codec.send(self.sock, CleanupHello(self.queue_id))
            msg = codec.expect(codec.recv(self.sock, self.peer, self.settings.max_frame),
                               CleanupEnvelope, self.peer)
            self.sender = msg.sender
            self._guard(self._check, msg)
            self._read_content()
            if msg.attrs.get("milter_edits") == "yes":
                self._milter_edits()
        except (EOFError, OSError) as exc:
            self._abort()
            maillog.info(f"{self.queue_id}: lost connection with {self.peer}: {exc}")
            return None
        except codec.IpcError as exc:
            self._abort()
            maillog.warning(f"{self.queue_id}: {exc}")
            return None
        except BaseException:
            self._abort()         # a bug: still leave no partial file behind
            raise
        try:
            result = self._complete()
        except BaseException:
            self._abort()
            raise
        try:
            codec.send(self.sock, result)
        except OSError as exc:
            maillog.warning(f"{self.queue_id}: cannot send result to {self.peer}: {exc}")
        if result.status == "ok":
            send_trigger(self.settings.qmgr_trigger, SCAN)
        return result

    def _check(self, msg: CleanupEnvelope) -> None:
        self.env = check_envelope(msg, self.settings.headers.myorigin)
        self.settings.mapping.map_sender(self.env, self.queue_id)
        self.sender = self.env.sender

    def _read_content(self) -> None:
        """Read D frames until E, writing what is not refused."""
        limit = self.settings.message_size_limit
        while True:
            kind, payload = codec.recv_frame(self.sock, self.peer, self.settings.max_frame)
            if kind == codec.END:
                return
            if kind != codec.DATA:
                raise codec.IpcError(f"expected content from {self.peer}, got frame kind {kind.decode()}")
            self.size += len(payload)
            if self.refusal is not None:
                continue                     # drain the rest, write nothing
            if limit and self.size > limit:
                self._set_refusal(Refusal("perm", TOO_BIG))
                continue
            if self.writer is None:
                if self.reader.feed(payload):
                    self._guard(self._start, False)
            else:
                self._guard(self._write_body, payload)

    def _milter_edits(self) -> None:
        """smtpd's milters changed the message (:mod:`postpy.cleanup.milter_edits`):
        read the changes (and a new body) and rewrite the unfinished file."""
        edits = codec.expect(codec.recv(self.sock, self.peer, self.settings.max_frame),
                             CleanupEdits, self.peer)
        if self.refusal is None and self.writer is None:
            self.reader.close()
            self._guard(self._start, True)
        if self.refusal is None and self.checks is not None:
            self._guard(self._write, self.checks.end())     # body_checks' last line, in the old body
            self._checks_ended = True
        if self.refusal is None:
            self._guard(self._rewrite, edits)
        if edits.replace_body:
            while True:
                kind, payload = codec.recv_frame(self.sock, self.peer, self.settings.max_frame)
                if kind == codec.END:
                    break
                if kind != codec.DATA:
                    raise codec.IpcError(f"expected a body from {self.peer}, got frame kind {kind.decode()}")
                if self.refusal is None:
                    self._guard(self._write, payload)

    def _rewrite(self, edits: CleanupEdits) -> None:
        assert self.writer is not None and self.env is not None
        self.writer, self._last_byte = milter_edits.rewrite(
            self.writer, edits, self.env, self.arrival, self.settings.headers.myorigin)
        self.sender = self.env.sender
        if not self.env.recipients:
            self.env.attrs["discard"] = "milter deleted every recipient"

    def _complete(self) -> CleanupResult:
        """After E: finish the file durably, or report why not."""
        if self.refusal is None and self.writer is None:
            self.reader.close()
            self._guard(self._start, True)
        if self.refusal is None:
            self._guard(self._finish)
        if self.refusal is not None and self._bounces_instead():
            self._guard(self._write_bounced, self.refusal)
            if self.returned:
                return CleanupResult("ok", self.queue_id,
                                     f"2.0.0 Ok: queued as {self.queue_id} (returned: {self.refusal.reply})",
                                     self.size)
        if self.refusal is not None:
            return CleanupResult(self.refusal.status, self.queue_id, self.refusal.reply, self.size)
        return CleanupResult("ok", self.queue_id, f"2.0.0 Ok: queued as {self.queue_id}", self.size)

    def _bounces_instead(self) -> bool:
        """A local submission that cleanup refuses for good is returned to its
        sender, not dropped: nobody is waiting for an SMTP reply to tell them."""
        env = self.env
        assert self.refusal is not None
        return (self.refusal.status == "perm" and env is not None and env.sender != ""
                and env.attrs.get("origin") == "pickup" and bool(env.recipients))

    def _write_bounced(self, refusal: Refusal) -> None:
        """Queue the message's header with every recipient already failed, so
        qmgr asks bounce for a non-delivery notice at once."""
        assert self.env is not None
        dsn, _, text = refusal.reply.partition(" ")
        recipients = [qfile.Recipient(r.address, r.orig, r.orcpt, r.notify, qfile.BOUNCED)
                      for r in self.env.recipients]
        envelope = qfile.Envelope(self.env.sender, recipients, arrival=self.arrival,
                                  attrs={**self.env.stored, "ret": "HDRS"})
        header = b"".join(h.raw for h in self.reader.headers) or b"Subject: (no header received)\n"
        writer = qfile.QueueFileWriter(self.settings.incoming, self.queue_id, envelope)
        try:
            writer.write(header + b"\n")
            path = writer.finish()
        except BaseException:
            writer.abort()
            raise
        qfile.append_log(path, [qfile.LogEntry(i, "failed", dsn, text) for i in range(len(recipients))])
        self.returned = True
        maillog.info(f"{self.queue_id}: from=<{self.env.sender}>: returned to sender: {refusal.reply}")

    # -- the queue file -----------------------------------------------------
    def _start(self, at_eof: bool) -> None:
        """The header block is complete: decide, then create the file."""
        assert self.env is not None
        env = self.env
        prepended = smtpd_prepend(env)
        if prepended:
            self.reader.headers[:0] = prepended
        self.checks = self.settings.checks.for_message(env, self.queue_id)
        if self.checks is not None:
            self.reader.headers = self.checks.check_headers(self.reader.headers)
        result = process_headers(self.reader, env, self.queue_id, self.settings.headers,
                                 self.arrival, self.settings.mapping)
        self.settings.mapping.map_recipients(env, self.queue_id)
        if self.checks is not None:
            self.checks.apply_to(env)     # REDIRECT, FILTER, BCC from the headers
        for name in self.reader.truncated:
            maillog.warning(f"{self.queue_id}: header {name} exceeds header_size_limit: truncated")
        if self.settings.queue_minfree:
            st = os.statvfs(self.settings.incoming)
            if st.f_bavail * st.f_frsize < self.settings.queue_minfree:
                raise Refusal("temp", NO_SPACE)
        envelope = qfile.Envelope(env.sender, env.recipients, arrival=self.arrival,
                                  attrs=env.stored)
        self.writer = qfile.QueueFileWriter(self.settings.incoming, self.queue_id, envelope)
        maillog.info(f"{self.queue_id}: message-id={result.message_id or '<>'}")
        body = self.reader.body_start
        separator = self.reader.separator or body or not at_eof
        self._write(result.data + (b"\n" if separator else b""))
        self._write_body(body)

    def _write_body(self, data: bytes) -> None:
        self._write(data if self.checks is None else self.checks.body(data))

    def _write(self, data: bytes) -> None:
        assert self.writer is not None
        if data:
            self.writer.write(data)
            self._last_byte = data[-1:]

    def _finish(self) -> None:
        assert self.writer is not None
        if self.checks is not None and not self._checks_ended:
            self._write(self.checks.end())
        if self._last_byte != b"\n":
            self._write(b"\n")               # every stored line ends with LF
        assert self.env is not None
        if self.checks is None and disposition.smtpd_verdict(self.env) == (False, False):
            self.writer.finish()
        else:
            disposition.finish(self.writer, self.checks, self.env, self.arrival)
        self.writer = None

    # -- failure paths ------------------------------------------------------------
    def _guard(self, step: Callable[..., None], *args: Any) -> None:
        """Run ``step``; a Refusal or an I/O error turns into this message's refusal."""
        try:
            step(*args)
        except Refusal as refusal:
            self._set_refusal(refusal)
        except OSError as exc:
            maillog.warning(f"{self.queue_id}: queue file write error: {exc.strerror or exc}")
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            self._set_refusal(Refusal("temp", NO_SPACE if full else WRITE_ERROR))

    def _set_refusal(self, refusal: Refusal) -> None:
        self._abort()
        if self.refusal is None:
            self.refusal = refusal
            if not isinstance(refusal, ContentRefusal):     # checks logged their own line
                maillog.info(f"{self.queue_id}: reject: {refusal.reply}; from=<{self.sender}>")

    def _abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def smtpd_prepend(env: CheckedEnvelope) -> list[Header]:
    """The header lines smtpd's restrictions PREPENDed (the ``prepend``
    attribute, a JSON list); malformed ones are logged and dropped."""
    text = env.attrs.get("prepend", "")
    if not text:
        return []
    try:
        lines = json.loads(text)
    except ValueError:
        lines = None
    if not isinstance(lines, list):
        maillog.warning(f"malformed prepend attribute from {env.origin or 'client'}: ignored")
        return []
    out = []
    for line in lines:
        raw = f"{line}\n".encode("utf-8", "surrogateescape") if isinstance(line, str) else b""
        name = header_name(raw)
        if name:
            out.append(Header(name, raw))
    return out


def serve(sock: socket.socket, settings: CleanupSettings, peer: str = "client") -> CleanupResult | None:
    """Handle one connection to private/cleanup."""
    return Session(sock, settings, peer).run()
