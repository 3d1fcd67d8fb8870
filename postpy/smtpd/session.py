"""One SMTP session: the command loop, the session state, the small commands.

A :class:`Session` reads command lines from its :class:`Channel`, looks
the verb up in one explicit table (:data:`HANDLERS`), and sends back the
handler's :class:`Reply`.  State, per RFC 5321 section 4.1.4:

- ``helo``/``esmtp``: set by HELO/EHLO; reset (EHLO needed again) by a
  successful STARTTLS (RFC 3207 section 4.2).
- ``txn``: the mail transaction, begun by MAIL, grown by RCPT, ended by
  DATA/BDAT LAST, RSET, HELO/EHLO or STARTTLS.
- ``errors``: every 4xx/5xx reply counts.  Past ``smtpd_soft_error_limit``
  each error reply waits ``smtpd_error_sleep_time``; at
  ``smtpd_hard_error_limit`` the session ends with 421 (Postfix's tarpit).
- ``counts``: per command [succeeded, total], for the disconnect log line.
- ``sasl_username``/``sasl_method``: set by a successful AUTH, kept across
  EHLO and RSET, forgotten by STARTTLS.
- Restrictions (:mod:`postpy.smtpd.restrictions`): :meth:`Session.request`
  describes the session to them, :meth:`Session.restrict` logs and applies
  a stage's result.  With ``smtpd_delay_reject = no`` a refused client gets
  the refusal instead of the greeting and ``503 5.7.0 Error: access denied
  for name[addr]`` for every command but QUIT.  ``illegal_pipelining`` is
  set when a command arrives with more input behind it where RFC 2920 does
  not allow it (after HELO, EHLO, DATA, STARTTLS or AUTH, or from a client
  that did not say EHLO), for ``reject_unauth_pipelining``.

Milters (``smtpd_milters``) hear of the connection, HELO/EHLO and the
session's end through :mod:`postpy.smtpd.milters`.

MAIL/RCPT live in :mod:`postpy.smtpd.envelope`, DATA/BDAT in
:mod:`postpy.smtpd.transfer`, AUTH in :mod:`postpy.smtpd.auth`; the rest
are here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from postpy.mail.address import AddressError, parse_path
from postpy.smtpd import auth, envelope, events, limits, milters, replies, tls, transfer
from postpy.smtpd.channel import Channel, ClientGone, ClientTimeout
from postpy.smtpd.commands import decode_line, parse_command
from postpy.smtpd.dnsquery import Lookups
from postpy.smtpd.relay import Recipient
from postpy.smtpd.replies import Reply
from postpy.smtpd.restrictions import Request, StageResult
from postpy.smtpd.settings import Settings
from postpy.smtpd.state import Client, Transaction
from postpy.smtpd.verdict import MessageActions
from postpy.util import maillog

_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]+=*")
NOT_IMPLEMENTED = frozenset({"ETRN", "EXPN", "TURN", "ATRN", "XCLIENT", "XFORWARD"})
NOT_PIPELINED = frozenset({"HELO", "EHLO", "DATA", "STARTTLS", "AUTH"})   # RFC 2920 section 3.1


Handler = Callable[["Session", str], Awaitable[Reply | None]]


class Shutdown:
    """``postpy stop`` reaching this process (SIGTERM): a session waiting for
    its client's next command is told 421 and closed at once; one that is
    busy (a message on its way to cleanup) finishes that first and is told
    421 before its next command, so no client misses the 250 of a message
    that was queued.  A reload (SIGUSR1) leaves sessions alone."""

    def __init__(self) -> None:
        self.requested = False
        self.waiting: set[asyncio.Task[object]] = set()   # sessions reading a command

    def request(self) -> None:
        self.requested = True
        for task in list(self.waiting):
            task.cancel()


SHUTDOWN = Shutdown()


class Session:
    def __init__(self, settings: Settings, channel: Channel, client: Client,
                 dns: Lookups | None = None) -> None:
        self.settings = settings
        self.channel = channel
        self.client = client
        self.dns = dns if dns is not None else Lookups(None)
        self.actions = MessageActions()     # from restrictions before MAIL (delay_reject = no)
        self.access_denied: Reply | None = None
        self.illegal_pipelining = False
        self.carried_defer: Reply | None = None   # DEFER_IF_PERMIT waiting for RCPT
        self.helo = ""
        self.esmtp = False
        self.txn = Transaction()
        self.errors = 0
        self.counts: dict[str, list[int]] = {}
        self.after = "CONNECT"          # for "lost connection after X"
        self.quit = False
        self.sasl_username = ""         # the AUTH login ("" until AUTH succeeds)
        self.sasl_method = ""
        self.milters: milters.SessionMilters | None = None    # smtpd_milters (milters.connect)
        self.reject_bare_lf = (settings.bare_newline == "reject"
                               and not settings.bare_newline_exclusions.matches(client.addr))

    # -- state --------------------------------------------------------------
    @property
    def protocol(self) -> str:
        """SMTP or ESMTP, then S for TLS and A for AUTH (RFC 3848): ESMTPSA."""
        base = "ESMTP" if self.esmtp else "SMTP"
        if self.channel.tls_active:
            base += "S"
        return base + "A" if self.sasl_username else base

    def reset(self) -> None:
        """End the transaction (RSET); a half-sent BDAT message is dropped."""
        if self.txn.bdat is not None:
            self.txn.bdat.abort()
        self.txn = Transaction()

    def send(self, reply: Reply) -> None:
        """Queue a reply ahead of the command's final one (354, 220 for TLS)."""
        self.channel.reply(reply)

    def log_reject(self, stage: str, reply: Reply, *, recipient: str | None = None,
                   queue_id: str = "NOQUEUE") -> None:
        events.reject(stage, self.client.label, reply, queue_id=queue_id, sender=self.txn.sender,
                      recipient=recipient, proto=self.protocol, helo=self.helo)

    def _count(self, name: str, ok: bool) -> None:
        entry = self.counts.setdefault(name, [0, 0])
        entry[0] += ok
        entry[1] += 1

    # -- the loop -----------------------------------------------------------
    async def run(self, refuse: Reply | None = None) -> None:
        label = self.client.label
        events.connect(label)
        try:
            if refuse is not None:
                self.channel.reply(refuse)
                return
            if self.settings.tls_wrappermode:
                if self.settings.tls_context is None:
                    # The client speaks TLS first; a plaintext banner would only
                    # confuse it.  Settings warned at start; close at once.
                    maillog.warning(f"smtpd_tls_wrappermode = yes but no certificate: "
                                    f"closing the connection from {label}")
                    return
                await self._handshake()
            result = await self.settings.rules().connect(self.request("CONNECT"))
            denied = self.restrict("CONNECT", result)
            if denied is not None:
                self.access_denied = denied
                self.errors += 1
                self.channel.reply(denied)
            else:
                if result is not None:
                    self.actions.merge(result.actions)
                await milters.connect(self, self.settings.milters)
                self.channel.reply(replies.greeting(self.settings.banner))
            while not self.quit:
                if SHUTDOWN.requested:
                    self._shut_down()
                    break
                if self.errors >= self.settings.hard_error_limit:
                    self.channel.reply(replies.too_many_errors(self.settings.hostname))
                    events.too_many_errors(self.after, label)
                    break
                line = await self._next_line()
                if line is None:
                    self.after = "UNKNOWN"
                    self._count("unknown", False)
                    await self._respond(replies.LINE_TOO_LONG)
                    continue
                await self._command(line)
        except asyncio.CancelledError:
            if not SHUTDOWN.requested:
                raise
            self._shut_down()
        except ClientTimeout:
            self.channel.reply(replies.timeout(self.settings.hostname))
            events.timeout(self.after, label)
        except ClientGone:
            events.lost_connection(self.after, label)
        except Exception as exc:    # a bug must cost one session, not the process
            maillog.warning(f"{type(exc).__name__} after {self.after} from {label}: {exc}")
            self.channel.reply(replies.internal_error(self.settings.hostname))
        finally:
            self.reset()
            await milters.quit(self)
            await self.channel.close()
            events.disconnect(label, self.counts)

    async def _next_line(self) -> bytes | None:
        """The next command line (None: too long), cancellable by a shutdown."""
        task = asyncio.current_task()
        if task is not None:
            SHUTDOWN.waiting.add(task)
        try:
            return await self.channel.read_line(self.settings.command_line_limit)
        finally:
            if task is not None:
                SHUTDOWN.waiting.discard(task)

    def _shut_down(self) -> None:
        self.channel.reply(replies.shutting_down(self.settings.hostname))
        events.shutting_down(self.after, self.client.label)

    async def _command(self, line: bytes) -> None:
        crlf = line.endswith(b"\r\n")
        text = decode_line(line[:-2] if crlf else line[:-1])
        command = parse_command(text)
        handler = HANDLERS.get(command.verb)
        name = command.verb.lower() if handler is not None else "unknown"
        self.after = command.verb if handler is not None else "UNKNOWN"
        if handler is not None and self.channel.pending() and (
                command.verb in NOT_PIPELINED or not self.esmtp):
            self.illegal_pipelining = True
        if not crlf and self.reject_bare_lf:
            reply: Reply | None = replies.BARE_LF
        elif self.access_denied is not None and command.verb != "QUIT":
            reply = replies.R(503, f"5.7.0 Error: access denied for {self.client.label}")
        elif handler is None:
            reply = self._unknown(command.verb, text)
        else:
            try:
                reply = await handler(self, command.arg)
            except (ClientGone, ClientTimeout):
                self._count(name, False)
                raise
        self._count(name, reply is None or not reply.is_error)
        if reply is not None:
            await self._respond(reply)

    def _unknown(self, verb: str, text: str) -> Reply:
        if not verb:
            return replies.BAD_SYNTAX
        if verb in self.settings.forbidden_commands or not verb[0].isascii() or not verb[0].isalpha():
            # A lone base64 word may be a SASL response sent after its exchange
            # ended (a password): never log it.
            shown = "(base64 data withheld)" if _BASE64_WORD.fullmatch(text) else text[:100]
            maillog.warning(f"non-SMTP command from {self.client.label}: {shown}")
            self.quit = True
            return replies.forbidden_command(self.settings.hostname)
        if verb in NOT_IMPLEMENTED:
            return replies.NOT_IMPLEMENTED
        return replies.UNKNOWN_COMMAND

    async def _respond(self, reply: Reply) -> None:
        if reply.is_error:
            self.errors += 1
            if self.errors > self.settings.soft_error_limit and self.settings.error_sleep > 0:
                await self.channel.flush()
                await asyncio.sleep(self.settings.error_sleep)
        self.channel.reply(reply)

    async def _handshake(self) -> None:
        assert self.settings.tls_context is not None
        try:
            await self.channel.start_tls(self.settings.tls_context, self.settings.starttls_timeout)
        except ClientGone as exc:
            events.tls_failed(self.client.label, str(exc))
            raise
        events.tls_established(self.client.label, tls.describe(self.channel.tls_object()))
        await limits.tls_done(self, bool(getattr(self.channel.tls_object(), "session_reused", False)))

    def request(self, state: str, recipient: str | None = None, address: str = "",
                size: int = 0, queue_id: str = "") -> Request:
        """The session as the restrictions see it."""
        c, tls_obj = self.client, self.channel.tls_object() if self.channel.tls_active else None
        cipher = tls_obj.cipher() if tls_obj is not None else None
        return Request(
            state=state, client_addr=c.addr, client_name=c.name, peer=c.peer,
            client_port=c.port, server_addr=c.server_addr, server_port=c.server_port,
            trusted=c.trusted, helo=self.helo, protocol=self.protocol, sender=self.txn.sender,
            recipient=recipient, recipient_address=address,
            recipient_count=len(self.txn.recipients), size=size or self.txn.mail.size or 0,
            queue_id=queue_id, instance=f"{id(self):x}.{self.counts.get('mail', [0, 0])[1]}",
            sasl_username=self.sasl_username, sasl_method=self.sasl_method,
            tls=(tls_obj.version() or "", cipher[0], str(cipher[2])) if tls_obj and cipher else ("", "", ""),
            pipelining_abuse=self.illegal_pipelining, dns=self.dns,
            carried_defer=self.carried_defer)

    def restrict(self, stage: str, result: StageResult | None, *, recipient: str | None = None,
                 queue_id: str = "NOQUEUE") -> Reply | None:
        """Log a stage's notes and refusal; the refusal, or None to go on."""
        if result is None:
            return None
        for action, text in result.notes:
            events.restriction(action, stage, self.client.label, text, queue_id=queue_id,
                               sender=self.txn.sender, recipient=recipient,
                               proto=self.protocol, helo=self.helo)
        if result.reply is not None:
            self.log_reject(stage, result.reply, recipient=recipient, queue_id=queue_id)
            if result.disconnect:
                self.quit = True
            return result.reply
        if result.carry is not None and self.carried_defer is None:
            self.carried_defer = result.carry
        return None

    def recipient(self, written: str, address: str) -> Recipient:
        return Recipient(written=written, address=address, client_addr=self.client.addr,
                         server_addr=self.client.server_addr, trusted=self.client.trusted,
                         sender=self.txn.sender or "", sasl_username=self.sasl_username)


# -- the small commands ---------------------------------------------------------

def _printable(name: str) -> str:
    """The HELO name as kept and logged: control characters become "?" (as
    Postfix does), so a name with a TAB cannot get mail refused after DATA."""
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in name)


async def _helo_stage(s: Session, name: str, verb: str) -> Reply | None:
    """HELO/EHLO restrictions (smtpd_delay_reject = no): the refusal, or None
    with the name taken."""
    previous = s.helo
    s.helo = name
    result = await s.settings.rules().helo(s.request(verb))
    refused = s.restrict(verb, result)
    if refused is not None:
        s.helo = previous
        return refused
    if result is not None:
        s.actions.merge(result.actions)
    refused = await milters.helo(s)
    if refused is not None:
        s.helo = previous
    return refused


async def helo_cmd(s: Session, arg: str) -> Reply:
    if not arg.strip():
        return replies.SYNTAX_HELO
    s.reset()
    refused = await _helo_stage(s, _printable(arg.strip()), "HELO")
    if refused is not None:
        return refused
    s.esmtp = False
    return replies.helo_ok(s.settings.hostname)


async def ehlo_cmd(s: Session, arg: str) -> Reply:
    if not arg.strip():
        return replies.SYNTAX_EHLO
    s.reset()
    refused = await _helo_stage(s, _printable(arg.strip()), "EHLO")
    if refused is not None:
        return refused
    s.esmtp = True
    cfg = s.settings
    keywords = ["PIPELINING",
                f"SIZE {cfg.message_size_limit}" if cfg.message_size_limit else "SIZE"]
    if not cfg.disable_vrfy:
        keywords.append("VRFY")
    if cfg.tls_context is not None and not s.channel.tls_active:
        keywords.append("STARTTLS")
    if cfg.sasl is not None:
        mechanisms = cfg.sasl.ehlo_keyword(s.channel.tls_active)
        if mechanisms is not None:
            keywords.append(mechanisms)
    keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
    if cfg.smtputf8_enable:
        keywords.append("SMTPUTF8")
    keywords.append("CHUNKING")
    return replies.ehlo_ok(cfg.hostname, keywords)


async def rset_cmd(s: Session, arg: str) -> Reply:
    if arg.strip():
        return replies.SYNTAX_RSET
    s.reset()
    return replies.OK


async def noop_cmd(s: Session, arg: str) -> Reply:
    return replies.OK


async def quit_cmd(s: Session, arg: str) -> Reply:
    if arg.strip():
        return replies.SYNTAX_QUIT
    s.quit = True
    return replies.BYE


async def help_cmd(s: Session, arg: str) -> Reply:
    verbs = [v for v in HANDLERS if (v != "STARTTLS" or s.settings.tls_context is not None)
             and (v != "AUTH" or s.settings.sasl is not None)]
    return replies.help_text(verbs)


async def vrfy_cmd(s: Session, arg: str) -> Reply:
    if s.settings.disable_vrfy:
        return replies.VRFY_DISABLED
    written = arg.strip()
    if written.startswith("<") and written.endswith(">"):
        written = written[1:-1]
    if not written:
        return replies.SYNTAX_VRFY
    try:
        address = parse_path(written, utf8=True, allow_null=False)
    except AddressError:
        return replies.BAD_RECIPIENT
    verdict = s.settings.relay.unlisted(s.recipient(written, address))
    if verdict is not None:
        s.log_reject("VRFY", verdict, recipient=written)
        return verdict
    return replies.vrfy_ok(written)


async def starttls_cmd(s: Session, arg: str) -> Reply | None:
    if arg.strip():
        return replies.SYNTAX_STARTTLS
    if s.channel.tls_active:
        return replies.TLS_ACTIVE
    if s.settings.tls_context is None:
        return replies.TLS_UNAVAILABLE if s.settings.tls_level == "encrypt" else replies.NOT_IMPLEMENTED
    too_fast = await limits.new_tls(s)      # smtpd_client_new_tls_session_rate_limit (anvil)
    if too_fast is not None:
        return too_fast
    s.send(replies.READY_TLS)
    await s._handshake()
    # RFC 3207 section 4.2: forget everything learned before TLS.
    s.reset()
    s.helo, s.esmtp = "", False
    s.sasl_username = s.sasl_method = ""
    return None


HANDLERS: dict[str, Handler] = {
    "HELO": helo_cmd,
    "EHLO": ehlo_cmd,
    "STARTTLS": starttls_cmd,
    "AUTH": auth.auth_cmd,
    "MAIL": envelope.mail_cmd,
    "RCPT": envelope.rcpt_cmd,
    "DATA": transfer.data_cmd,
    "BDAT": transfer.bdat_cmd,
    "RSET": rset_cmd,
    "NOOP": noop_cmd,
    "VRFY": vrfy_cmd,
    "HELP": help_cmd,
    "QUIT": quit_cmd,
}
