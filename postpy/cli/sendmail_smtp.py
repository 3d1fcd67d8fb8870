"""``sendmail -bs``: one SMTP session on stdin/stdout, submitted via maildrop.

Programs that speak SMTP to a local pipe (some mail readers, ``fetchmail
--mda``, test harnesses) run ``sendmail -bs``.  Postfix runs its smtpd in
stand-alone mode for this; postpy's smtpd is an asyncio network server
that hands mail to cleanup, and this process runs as the invoking user,
who may not talk to cleanup.  So this is a compact synchronous session
that shares smtpd's command parsers and reply texts
(:mod:`postpy.smtpd.commands`, :mod:`postpy.smtpd.replies`) and writes
each message into ``maildrop/`` like plain ``sendmail``: the kernel
records the submitter's uid, pickup logs it, and mail waits there while
the system is down.

What is different from smtpd, and why:

- No relay or access controls (Postfix: they are off for ``-bs`` unless
  it runs as mail_owner): the user could run ``sendmail`` directly anyway.
- DATA ends at a line that is exactly ``.`` followed by CRLF *or* a bare
  LF: the peer is a local program on a pipe, often writing bare LF, and
  there is no relay in between that could disagree about where a message
  ends (the SMTP smuggling concern of RFC 5321 section 4.5.2 does not
  arise).  Leading dots are unstuffed; CRLF becomes LF.
- No STARTTLS, AUTH, BDAT, ETRN: ``502``.  VRFY follows
  ``disable_vrfy_command``.
- The queue ID in ``250 Ok: queued as ID`` is that of the maildrop file;
  cleanup assigns the final one when pickup takes it.
- ``smtpd_hard_error_limit`` bad commands end the session with ``421``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from postpy.queue import qfile
from postpy.queue.maildrop import MaildropError
from postpy.smtpd import replies
from postpy.smtpd.commands import (
    CommandError,
    mail_params,
    parse_command,
    parse_mail,
    parse_rcpt,
    rcpt_params,
)
from postpy.smtpd.replies import Reply

LINE_LIMIT = 2048
DATA_CHUNK = 65536
Submit = Callable[[str, list[qfile.Recipient], Iterator[bytes], dict[str, str]], str]


@dataclass
class SessionSettings:
    hostname: str
    banner: str
    size_limit: int = 10240000       # 0: none
    recipient_limit: int = 1000
    vrfy: bool = False
    error_limit: int = 20


class ClientGone(Exception):
    """stdin ended (or failed) in the middle of the session."""


class TooBig(Exception):
    """The message exceeded message_size_limit (its rest was read and dropped)."""


@dataclass
class Txn:
    sender: str | None = None
    recipients: list[qfile.Recipient] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)
    smtputf8: bool = False


class StdioSession:
    def __init__(self, settings: SessionSettings, rfile: BinaryIO, wfile: BinaryIO,
                 submit: Submit) -> None:
        self.s = settings
        self.rfile = rfile
        self.wfile = wfile
        self.submit = submit
        self.txn = Txn()
        self.helo = ""
        self.errors = 0

    def reply(self, reply: Reply) -> None:
        self.wfile.write(reply.encode())
        self.wfile.flush()
        if reply.is_error:
            self.errors += 1

    def _line(self) -> bytes | None:
        line = self.rfile.readline(LINE_LIMIT + 2)
        if not line:
            return None
        if not line.endswith(b"\n"):
            while True:                       # drop the rest of an overlong line
                more = self.rfile.readline(LINE_LIMIT)
                if not more or more.endswith(b"\n"):
                    break
            return b"\x00too long"
        return line.rstrip(b"\n").removesuffix(b"\r")

    def run(self) -> int:
        """Serve until QUIT or end of input; 0 (the sendmail exit status)."""
        self.reply(replies.greeting(self.s.banner))
        while True:
            line = self._line()
            if line is None:
                return 0
            if line == b"\x00too long":
                self.reply(replies.LINE_TOO_LONG)
                continue
            try:
                reply = self.command(line.decode("utf-8", "surrogateescape"))
            except ClientGone:
                return 0
            if reply is not None:
                self.reply(reply)
            if reply is replies.BYE:
                return 0
            if self.errors >= self.s.error_limit:
                self.reply(replies.too_many_errors(self.s.hostname))
                return 0

    # -- commands -----------------------------------------------------------
    def command(self, text: str) -> Reply | None:
        cmd = parse_command(text)
        verb, arg = cmd.verb, cmd.arg
        if verb in ("HELO", "EHLO"):
            if not arg.strip():
                return replies.SYNTAX_HELO if verb == "HELO" else replies.SYNTAX_EHLO
            self.helo = arg.strip()
            self.txn = Txn()
            if verb == "HELO":
                return replies.helo_ok(self.s.hostname)
            size = f"SIZE {self.s.size_limit}" if self.s.size_limit else "SIZE"
            keywords = ["PIPELINING", size, *(["VRFY"] if self.s.vrfy else []),
                        "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]
            return replies.ehlo_ok(self.s.hostname, keywords)
        if verb == "MAIL":
            return self.mail(arg)
        if verb == "RCPT":
            return self.rcpt(arg)
        if verb == "DATA":
            return self.data(arg)
        if verb in ("RSET", "NOOP", "QUIT"):
            if arg.strip() and verb != "NOOP":
                return replies.SYNTAX_RSET if verb == "RSET" else replies.SYNTAX_QUIT
            if verb == "RSET":
                self.txn = Txn()
            return replies.BYE if verb == "QUIT" else replies.OK
        if verb == "VRFY":
            if not self.s.vrfy:
                return replies.VRFY_DISABLED
            return replies.vrfy_ok(arg.strip()) if arg.strip() else replies.SYNTAX_VRFY
        if verb in ("STARTTLS", "AUTH", "BDAT", "ETRN", "EXPN", "TURN", "XCLIENT", "XFORWARD"):
            return replies.NOT_IMPLEMENTED
        if not verb:
            return replies.BAD_SYNTAX
        return replies.UNKNOWN_COMMAND

    def mail(self, arg: str) -> Reply:
        if self.txn.sender is not None:
            return replies.NESTED_MAIL
        try:
            path = parse_mail(arg)
            params = mail_params(path.params, smtputf8_enable=True, chunking=False)
        except CommandError as exc:
            return exc.reply
        if self.s.size_limit and params.size and params.size > self.s.size_limit:
            return replies.TOO_BIG
        if not path.address.isascii() and not params.smtputf8:
            return replies.UTF8_REQUIRED
        attrs = {}
        if params.ret:
            attrs["ret"] = params.ret
        if params.envid:
            attrs["envid"] = params.envid
        if params.body:
            attrs["body"] = params.body
        if params.smtputf8:
            attrs["smtputf8"] = "yes"
        self.txn = Txn(path.address, [], attrs, params.smtputf8)
        return replies.MAIL_OK

    def rcpt(self, arg: str) -> Reply:
        if self.txn.sender is None:
            return replies.NEED_MAIL
        try:
            path = parse_rcpt(arg)
            params = rcpt_params(path.params)
        except CommandError as exc:
            return exc.reply
        if not path.address.isascii() and not self.txn.smtputf8:
            return replies.UTF8_REQUIRED
        if len(self.txn.recipients) >= self.s.recipient_limit:
            return replies.TOO_MANY_RCPTS
        self.txn.recipients.append(qfile.Recipient(path.address, orcpt=params.orcpt,
                                                   notify=params.notify))
        return replies.RCPT_OK

    def data(self, arg: str) -> Reply:
        if arg.strip():
            return replies.SYNTAX_DATA
        if self.txn.sender is None:
            return replies.NEED_MAIL
        if not self.txn.recipients:
            return replies.NEED_RCPT
        self.reply(replies.START_DATA)
        txn, self.txn = self.txn, Txn()
        content = self._content()
        try:
            name = self.submit(txn.sender or "", txn.recipients, content, txn.attrs)
        except TooBig:
            return replies.TOO_BIG
        except MaildropError:
            self._read_rest(content)
            return replies.WRITE_ERROR
        except ValueError as exc:
            self._read_rest(content)
            return Reply.of(554, f"5.5.4 Error: {exc}")
        return replies.queued(name.split(".", 1)[0])

    def _read_rest(self, content: Iterator[bytes]) -> None:
        """After 354 the message must be read up to its "." line whatever
        happens (RFC 5321): otherwise its lines would be taken as commands."""
        try:
            for _ in content:
                pass
        except TooBig:
            pass

    def _content(self) -> Iterator[bytes]:
        """The message up to the "." line: unstuffed, LF line ends, bounded."""
        size = 0
        line_start = True
        held_cr = False
        limit = self.s.size_limit
        while True:
            piece = self.rfile.readline(DATA_CHUNK)
            if not piece:
                raise ClientGone("end of input during DATA")
            complete = piece.endswith(b"\n")
            if line_start and complete and piece in (b".\r\n", b".\n") and not held_cr:
                break
            out = piece
            if held_cr:
                out = b"\r" + out
                held_cr = False
            if line_start and out.startswith(b"."):
                out = out[1:]
            if complete:
                if out.endswith(b"\r\n"):
                    out = out[:-2] + b"\n"
            elif out.endswith(b"\r"):
                out, held_cr = out[:-1], True      # perhaps half of a CRLF
            line_start = complete
            size += len(out)
            if limit and size > limit:
                self._drain(line_start)
                raise TooBig()
            if out:
                yield out
        if held_cr:
            yield b"\r"

    def _drain(self, line_start: bool) -> None:
        while True:
            piece = self.rfile.readline(DATA_CHUNK)
            if not piece:
                raise ClientGone("end of input during DATA")
            if line_start and piece in (b".\r\n", b".\n"):
                return
            line_start = piece.endswith(b"\n")
