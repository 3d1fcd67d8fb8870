"""One SMTP client session to one server address (RFC 5321 as the client).

:meth:`Session.open` connects, reads the greeting, says EHLO (HELO when the
server refuses EHLO), and upgrades with STARTTLS as the TLS policy says
(:mod:`postpy.smtp.tls`).  :meth:`Session.send_message` runs one mail
transaction and returns one :class:`Outcome` per recipient: MAIL FROM with
SIZE, BODY=8BITMIME, SMTPUTF8 and DSN's RET/ENVID when the server offers
them; RCPT TO with NOTIFY/ORCPT; DATA with the content from
:class:`postpy.smtp.encode.DataEncoder`.  With PIPELINING (RFC 2920) MAIL,
all RCPTs and DATA go out in one write.  A session that ends a transaction
cleanly can carry the next message (connection reuse).

Failures are :class:`postpy.smtp.failure.DeliveryFailure`.  Up to and
including the reply to MAIL FROM they are raised (``next_host`` when
another server may do better: connection trouble, 4xx greeting, TLS);
after that they become per-recipient outcomes.  Texts follow Postfix's
shapes (``connect to h[a]:25: Connection refused``, ``host h[a] said: 550
5.1.1 ... (in reply to RCPT TO command)``, ``lost connection with h[a]
while sending message body``) because logs and DSNs carry them.

8-bit content to a server without 8BITMIME (RFC 6152 section 3) is
converted to 7 bit by :func:`postpy.smtp.mime7bit.to_7bit` (quoted-printable
or base64 per part) and sent without a BODY parameter.  Content that cannot
be converted safely, and all 8-bit content when
``disable_mime_output_conversion = yes``, is sent as it is (what servers in
practice accept).  Mail that *needs* SMTPUTF8 is never sent to a server
without it: it bounces with 5.6.7 (RFC 6531 section 3.4).

LMTP mode (RFC 2033, ``ClientSettings.lmtp``; the ``lmtp`` program): LHLO
instead of EHLO (no HELO fallback, no check for our own name in the reply,
since the LMTP server is usually this very host), the server may be a
unix-domain socket (``Target.unix``), and after the final dot the server
sends one reply per accepted recipient, in RCPT order: each becomes that
recipient's outcome.  A connection lost among those replies defers only
the recipients whose reply did not arrive.

Every network step has its own limit (``smtp_connect_timeout``,
``smtp_helo_timeout``, ``smtp_starttls_timeout``, ``smtp_mail_timeout``,
``smtp_rcpt_timeout``, ``smtp_data_init_timeout``,
``smtp_data_xfer_timeout``, ``smtp_data_done_timeout``,
``smtp_rset_timeout``, ``smtp_quit_timeout``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import time
from collections.abc import Awaitable
from typing import TypeVar

from postpy.smtp.dns import Target, literal_address
from postpy.smtp.encode import DataEncoder, orcpt_param, xtext
from postpy.smtp.failure import DeliveryFailure, permanent, temporary
from postpy.smtp.message import Outcome, OutMessage, OutRcpt
from postpy.smtp.mime7bit import to_7bit
from postpy.smtp.reply import MAX_REPLY_LINES, Features, Reply, ReplyError, parse_line
from postpy.smtp.sasl_client import authenticate, choose_mechanism, find_credentials
from postpy.smtp.settings import ClientSettings
from postpy.smtp.tls import TlsPolicy, certificate_summary, check_peer, describe
from postpy.util import maillog

T = TypeVar("T")
DATA_DONE = "sending end of data -- message may be sent more than once"
BDAT_CHUNK = 1 << 18          # bytes per BDAT command


class TlsFallback(DeliveryFailure):
    """The opportunistic TLS handshake failed: retry this server in plain text."""


class Session:
    def __init__(self, target: Target, settings: ClientSettings,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.features = Features()
        self.tls = ""                  # description once encrypted
        self.policy: TlsPolicy = settings.tls
        self.domain = ""               # next-hop domain (TLS match names, SASL keys)
        self.sasl_username = ""        # the login, once AUTH succeeded
        self.uses = 0                  # transactions run on this connection
        self.created = time.monotonic()
        self.usable = True

    @property
    def peer(self) -> str:
        return f"{self.target.host}[{self.target.address}]"

    # -- opening ---------------------------------------------------------
    @classmethod
    async def open(cls, target: Target, settings: ClientSettings, nexthop: str,
                   *, use_tls: bool = True, policy: TlsPolicy | None = None, domain: str = "",
                   sender: str = "") -> Session:
        """``policy``: the next hop's TLS policy (default the global one); ``domain``:
        the next-hop domain; ``sender``: for sender-dependent SASL logins."""
        local = (settings.bind_address, 0) if settings.bind_address else None
        try:
            if target.unix:
                connect = asyncio.open_unix_connection(target.address, limit=1 << 16)
            else:
                connect = asyncio.open_connection(target.address, target.port, local_addr=local,
                                                  limit=1 << 16)
            reader, writer = await asyncio.wait_for(connect, settings.timeouts.connect)
        except TimeoutError:
            raise temporary(f"connect to {target.relay}: Connection timed out", "4.4.1") from None
        except OSError as exc:
            # asyncio words a refused connect as "Connect call failed (...)": use errno's text.
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise temporary(f"connect to {target.relay}: {reason}", "4.4.1") from None
        session = cls(target, settings, reader, writer)
        session.policy = policy or settings.tls
        session.domain = domain or nexthop
        try:
            await session._handshake(nexthop, use_tls)
            await session._login(sender)
        except DeliveryFailure as exc:
            session.close()
            exc.relay = target.relay
            raise
        except BaseException:
            session.close()
            raise
        return session

    async def _handshake(self, nexthop: str, use_tls: bool) -> None:
        t = self.settings.timeouts
        greeting = await self._reply(t.helo, "receiving the initial server greeting")
        if not greeting.ok:
            dsn = greeting.dsn
            if greeting.kind == 5 and self.settings.skip_5xx_greeting:
                dsn = "4" + dsn[1:]
            raise DeliveryFailure(dsn, f"host {self.peer} refused to talk to me: {greeting.text()}",
                                  next_host=True)
        await self._hello(nexthop)
        policy = self.policy
        if policy.context is None or not use_tls:
            return
        if not self.features.starttls:
            if policy.required:
                self._quit_soon()
                raise temporary(f"TLS is required, but was not offered by host {self.peer}", "4.7.4")
            return
        reply = await self.command("STARTTLS", t.starttls, "sending STARTTLS")
        if reply.code != 220:
            if policy.required:
                raise temporary(f"TLS is required, but host {self.peer} refused to start TLS: "
                                f"{reply.text()}", "4.7.4")
            return
        if getattr(self.reader, "_buffer", b""):
            # Plain-text bytes after the 220 would be read as if they came over TLS
            # (the STARTTLS response injection attack): refuse to go on.
            raise temporary(f"host {self.peer} sent data after its reply to STARTTLS", "4.7.0")
        await self._start_tls(policy)
        await self._hello(nexthop)

    async def _hello(self, nexthop: str) -> None:
        t = self.settings.timeouts
        name = self.settings.helo_name
        if self.settings.lmtp:
            reply = await self.command(f"LHLO {name}", t.helo, "performing the LHLO handshake")
            if not reply.ok:
                raise self._said(reply, "LHLO", next_host=True)
            self.features = Features.from_ehlo(reply)
            return
        reply = await self.command(f"EHLO {name}", t.helo, "performing the EHLO handshake")
        if reply.ok:
            self.features = Features.from_ehlo(reply)
        elif reply.kind == 5:
            # RFC 5321 section 3.2: a server that does not know EHLO gets HELO.
            reply = await self.command(f"HELO {name}", t.helo, "performing the HELO handshake")
            if not reply.ok:
                raise self._said(reply, "HELO", next_host=True)
            self.features = Features.from_helo(reply)
        else:
            raise self._said(reply, "EHLO", next_host=True)
        if self.features.name.lower() == self.settings.myhostname.lower():
            maillog.warning(f"host {self.peer} replied to HELO/EHLO with my own hostname "
                            f"{self.settings.myhostname}")
            raise permanent(f"mail for {nexthop} loops back to myself", "5.4.6")

    async def _start_tls(self, policy: TlsPolicy) -> None:
        assert policy.context is not None
        host = self.target.host
        name = None if literal_address(host) is not None or self.target.unix else host
        try:
            await self.writer.start_tls(policy.context, server_hostname=name,
                                        ssl_handshake_timeout=self.settings.timeouts.starttls)
        except ssl.SSLCertVerificationError as exc:
            maillog.info(f"certificate verification failed for {self.target.relay}: "
                         f"{exc.verify_message or exc.reason}")
            raise temporary("Server certificate not verified", "4.7.5") from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            text = f"Cannot start TLS: handshake failure with {self.peer}: {exc}"
            if policy.required:
                raise temporary(text, "4.7.5") from None
            raise TlsFallback("4.7.5", text, next_host=True) from None
        ssl_object = self.writer.get_extra_info("ssl_object")
        problem = check_peer(policy, ssl_object, host, self.domain_name)
        if problem is not None:
            maillog.info(f"certificate verification failed for {self.target.relay}: {problem}")
            raise temporary("Server certificate not verified", "4.7.5")
        self.tls = describe(ssl_object)
        if policy.verify:
            trust = "Verified"
        elif not ssl_object.getpeercert(binary_form=True):
            trust = "Anonymous"
        else:
            trust = "Untrusted"
        maillog.info(f"{trust} TLS connection established to {self.target.relay}: {self.tls}")
        if policy.loglevel >= 2:
            maillog.info(f"{self.target.relay}: {certificate_summary(ssl_object, policy.digest)}")

    async def _login(self, sender: str) -> None:
        """SMTP AUTH when a login is configured for this server (postpy.smtp.sasl_client)."""
        sasl = self.settings.sasl
        if sasl is None or not sasl.enable:
            return
        creds = find_credentials(sasl, sender, self.target.host, self.target.port,
                                 self.domain_name)
        if creds is None or not self.features.auth:
            return
        mechanism, why = choose_mechanism(self.features.auth, sasl, bool(self.tls))
        if mechanism is None:
            maillog.warning(f"SASL authentication failure: cannot authenticate to "
                            f"{self.target.relay}: {why}")
            self._quit_soon()
            raise temporary(f"SASL authentication failed; cannot authenticate to server "
                            f"{self.peer}: no mechanism available ({why})", "4.7.0")
        t = self.settings.timeouts.helo
        reply = await authenticate(
            lambda line: self.command(line, t, "performing SASL authentication"), mechanism, creds)
        if reply.ok:
            self.sasl_username = creds.username
            return
        dsn = reply.dsn if reply.kind == 4 else "4" + reply.dsn[1:] if reply.kind == 5 else "4.7.0"
        self._quit_soon()
        raise temporary(f"SASL authentication failed; server {self.peer} said: {reply.text()}", dsn)

    @property
    def domain_name(self) -> str:
        """The next-hop domain without brackets or port (a SASL lookup key)."""
        first = (self.domain.replace(",", " ").split() or [""])[0]
        if first.startswith("["):
            return first[1:first.find("]")] if "]" in first else first
        return first.split(":", 1)[0] if first.count(":") == 1 else first

    # -- low-level I/O ---------------------------------------------------
    async def _io(self, awaitable: Awaitable[T], timeout: float, stage: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            self.usable = False
            raise temporary(f"conversation with {self.peer} timed out while {stage}") from None
        except (OSError, EOFError, asyncio.IncompleteReadError):
            self.usable = False
            raise temporary(f"lost connection with {self.peer} while {stage}") from None

    async def _reply(self, timeout: float, stage: str) -> Reply:
        return await self._io(self._read_reply(stage), timeout, stage)

    async def _read_reply(self, stage: str) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self.usable = False
                raise temporary(f"host {self.peer} sent an over-long reply line while {stage}",
                                "4.5.0") from None
            if not raw.endswith(b"\n"):
                raise EOFError(stage)
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            try:
                this, last, text = parse_line(line)
            except ReplyError as exc:
                self.usable = False
                raise temporary(f"host {self.peer} {exc} while {stage}", "4.5.0") from None
            if code and this != code:
                self.usable = False
                raise temporary(f"host {self.peer} sent a mixed multi-line reply while {stage}", "4.5.0")
            code = this
            lines.append(text)
            if last:
                return Reply(code, lines)
            if len(lines) > MAX_REPLY_LINES:
                self.usable = False
                raise temporary(f"host {self.peer} sent a reply of too many lines while {stage}", "4.5.0")

    async def _write(self, data: bytes, timeout: float, stage: str) -> None:
        self.writer.write(data)
        await self._io(self.writer.drain(), timeout, stage)

    async def command(self, line: str, timeout: float, stage: str) -> Reply:
        await self._write(line.encode("utf-8", "surrogateescape") + b"\r\n", timeout, stage)
        return await self._reply(timeout, stage)

    def _said(self, reply: Reply, command: str, *, next_host: bool = False) -> DeliveryFailure:
        return DeliveryFailure(reply.dsn, f"host {self.peer} said: {reply.text()} "
                               f"(in reply to {command} command)", next_host=next_host)

    def _outcome(self, reply: Reply, command: str) -> Outcome:
        if reply.ok:
            return Outcome("sent", reply.dsn, reply.text())
        if reply.kind not in (4, 5):       # e.g. a 3xx where 2xx belongs: RFC 5321 4.3.2
            return Outcome("deferred", "4.5.0", f"host {self.peer} said: {reply.text()} "
                           f"(unexpected reply to {command} command)")
        failure = self._said(reply, command)
        return Outcome(failure.status, failure.dsn, failure.text)

    # -- the mail transaction ---------------------------------------------
    def _mail_command(self, msg: OutMessage) -> str:
        f = self.features
        sender = f"MAIL FROM:<{msg.sender}>"
        if f.size is not None:
            sender += f" SIZE={msg.size}"
        if msg.eightbit and f.eightbitmime:
            sender += " BODY=8BITMIME"
        if (msg.smtputf8 or msg.needs_smtputf8) and f.smtputf8:
            sender += " SMTPUTF8"
        if f.dsn:
            if msg.ret:
                sender += f" RET={msg.ret}"
            if msg.envid:
                sender += f" ENVID={xtext(msg.envid)}"
        return sender

    def _downgrade(self, msg: OutMessage) -> OutMessage:
        """8-bit content for a server without 8BITMIME, as 7 bit when it can be converted."""
        if not msg.eightbit or self.features.eightbitmime or \
                not self.settings.mime_output_conversion:
            return msg
        converted = to_7bit(b"".join(msg.chunks()))
        if converted is None:
            return msg
        return dataclasses.replace(msg, chunks=lambda: (converted,), size=len(converted),
                                   eightbit=False)

    def _rcpt_command(self, rcpt: OutRcpt) -> str:
        line = f"RCPT TO:<{rcpt.address}>"
        if self.features.dsn:
            if rcpt.notify:
                line += f" NOTIFY={rcpt.notify}"
            orcpt = orcpt_param(rcpt.orcpt, smtputf8=self.features.smtputf8) if rcpt.orcpt else ""
            if orcpt:
                line += f" ORCPT={orcpt}"
        return line

    def _refuse(self, msg: OutMessage) -> Outcome | None:
        """Checks before MAIL FROM: what this server cannot take (RFC 1870, RFC 6531)."""
        f = self.features
        if msg.needs_smtputf8 and not f.smtputf8:
            return Outcome("bounced", "5.6.7",
                           f"SMTPUTF8 is required, but was not offered by host {self.peer}")
        if f.size and msg.size > f.size:
            return Outcome("bounced", "5.3.4", f"message size {msg.size} exceeds size limit "
                           f"{f.size} of server {self.peer}")
        return None

    async def send_message(self, msg: OutMessage) -> list[Outcome]:
        """One transaction; one outcome per recipient, in order."""
        self.uses += 1
        msg = self._downgrade(msg)
        refused = self._refuse(msg)
        if refused is not None:
            return [refused] * len(msg.recipients)
        t = self.settings.timeouts
        mail = self._mail_command(msg)
        rcpts = [self._rcpt_command(r) for r in msg.recipients]
        if self.features.pipelining:
            ask_data = () if self.bdat else ("DATA",)
            batch = "".join(f"{line}\r\n" for line in (mail, *rcpts, *ask_data))
            await self._write(batch.encode("utf-8", "surrogateescape"), t.mail, "sending MAIL FROM")
            mail_reply = await self._reply(t.mail, "sending MAIL FROM")
        else:
            mail_reply = await self.command(mail, t.mail, "sending MAIL FROM")
        if mail_reply.code == 421:
            # The server is going away: another server may take the mail.
            self.usable = False
            failure = self._said(mail_reply, "MAIL FROM", next_host=True)
            failure.relay = self.target.relay
            raise failure
        results: list[Outcome | None] = [None] * len(rcpts)
        try:
            await self._after_mail(msg, mail_reply, rcpts, results)
        except DeliveryFailure as exc:
            # Connection trouble after MAIL FROM: every open recipient is deferred.
            self.usable = False
            lost = Outcome(exc.status, exc.dsn, exc.text)
            return [r if r is not None else lost for r in results]
        return [r if r is not None else Outcome("deferred", "4.5.0", "no reply") for r in results]

    async def _after_mail(self, msg: OutMessage, mail_reply: Reply, rcpts: list[str],
                          results: list[Outcome | None]) -> None:
        """Fill ``results`` as replies come in, so a broken connection keeps what was decided."""
        t = self.settings.timeouts
        pipelined = self.features.pipelining
        if not mail_reply.ok:
            results[:] = [self._outcome(mail_reply, "MAIL FROM")] * len(rcpts)
            if pipelined:      # read (and ignore) the replies already asked for
                for _ in rcpts:
                    await self._reply(t.rcpt, "sending RCPT TO")
                if self.bdat:
                    await self._reset()
                    return
                data_reply = await self._reply(t.data_init, "sending DATA command")
                if data_reply.code == 354:      # a confused server: end the empty message
                    await self._send_content(msg, empty=True)
            await self._reset()
            return
        accepted: list[int] = []
        for i, line in enumerate(rcpts):
            if pipelined:
                reply = await self._reply(t.rcpt, "sending RCPT TO")
            else:
                reply = await self.command(line, t.rcpt, "sending RCPT TO")
            if reply.ok:
                accepted.append(i)
            else:
                results[i] = self._outcome(reply, "RCPT TO")
        if (self.bdat or not pipelined) and not accepted:
            await self._reset()
            return
        if self.bdat:
            final = await self._send_bdat(msg)
            for i in accepted:
                results[i] = self._outcome(final, "BDAT")
            return
        if pipelined:
            data_reply = await self._reply(t.data_init, "sending DATA command")
        else:
            data_reply = await self.command("DATA", t.data_init, "sending DATA command")
        if data_reply.code != 354:
            for i in accepted:
                results[i] = self._outcome(data_reply, "DATA")
            await self._reset()
            return
        if self.settings.lmtp and not accepted:
            # RFC 2033 section 4.2 forbids this 354: how many replies follow the
            # dot is unknown, so the connection cannot be trusted any more.
            self.usable = False
            return
        # A server that says 354 with no valid recipient gets an empty message.
        final = await self._send_content(msg, empty=not accepted)
        if not self.settings.lmtp:
            for i in accepted:
                results[i] = self._outcome(final, "end of DATA")
            return
        for n, i in enumerate(accepted):       # RFC 2033 section 4.2: one reply each
            if n:
                final = await self._reply(t.data_done, DATA_DONE)
            results[i] = self._outcome(final, "end of DATA")

    async def _send_content(self, msg: OutMessage, *, empty: bool = False) -> Reply:
        t = self.settings.timeouts
        encoder = DataEncoder(self.settings.line_length_limit)
        if not empty:
            buffered = bytearray()
            for chunk in msg.chunks():
                buffered += encoder.feed(chunk)
                if len(buffered) >= 1 << 16:
                    await self._write(bytes(buffered), t.data_xfer, "sending message body")
                    buffered.clear()
            await self._write(bytes(buffered) + encoder.finish(), t.data_xfer, "sending message body")
        else:
            await self._write(encoder.finish(), t.data_xfer, "sending message body")
        return await self._reply(t.data_done, DATA_DONE)

    @property
    def bdat(self) -> bool:
        """Send content with BDAT (RFC 3030): the server offers CHUNKING (SMTP only)."""
        return self.features.chunking and not self.settings.lmtp

    async def _send_bdat(self, msg: OutMessage) -> Reply:
        """The content in BDAT chunks, each answered before the next; the last reply."""
        t = self.settings.timeouts
        encoder = DataEncoder(self.settings.line_length_limit, stuff=False)
        pending = bytearray()

        async def chunk(data: bytes, last: bool) -> Reply:
            command = f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode("ascii")
            await self._write(command + data, t.data_xfer, "sending message body")
            return await self._reply(t.data_done if last else t.data_xfer,
                                     DATA_DONE if last else "sending message body")

        for piece in msg.chunks():
            pending += encoder.feed(piece)
            while len(pending) >= BDAT_CHUNK:
                reply = await chunk(bytes(pending[:BDAT_CHUNK]), False)
                del pending[:BDAT_CHUNK]
                if not reply.ok:
                    self.usable = False     # the server's state after a refused chunk is unclear
                    return reply
        pending += encoder.finish()
        return await chunk(bytes(pending), True)

    async def _reset(self) -> None:
        """RSET after an aborted transaction, so the connection can be reused."""
        try:
            reply = await self.command("RSET", self.settings.timeouts.rset, "sending RSET")
            self.usable = self.usable and reply.ok
        except DeliveryFailure:
            self.usable = False

    # -- closing ---------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.usable and not self.reader.at_eof() and not self.writer.is_closing()

    def _quit_soon(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"QUIT\r\n")

    async def quit(self) -> None:
        """QUIT politely (bounded by smtp_quit_timeout), then close."""
        if self.alive:
            try:
                await self.command("QUIT", self.settings.timeouts.quit, "sending QUIT")
            except DeliveryFailure:
                pass
        self.close()

    def close(self) -> None:
        self.usable = False
        self.writer.close()
