"""Several milters in order, as smtpd's ``smtpd_milters`` list.

Where it sits in the mail path: one :class:`MilterChain` per SMTP session
(:mod:`postpy.smtpd.milters` drives it).  Each event goes to every milter
still interested, in list order, and stops at the first that rejects,
tempfails or discards; a milter that accepts is left out for the rest of
the message (the connection, when it accepts at CONNECT or HELO).

A milter that is down, slow or speaks nonsense (:class:`MilterError`) gets
``milter_default_action``:

- ``tempfail``: ``451 4.7.1 Service unavailable - try again later`` for the
  message (and every later one of the session);
- ``reject``: ``550 5.7.1 Command rejected``, likewise;
- ``accept``: the milter is left out for the rest of the session;
- ``quarantine``: as accept, but each message goes to the hold queue.

An error at CONNECT or HELO gives its verdict at the next MAIL, so the
client's EHLO still succeeds.

End of message (:meth:`MilterChain.eom`) collects every milter's
modification requests into one :class:`Edits`, applied by cleanup (see
:mod:`postpy.cleanup.milter_edits`).  Each milter sees the message as the
client sent it, not as earlier milters changed it (as in Postfix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.ipc.messages import CleanupEdits, HeaderEdit, Rcpt
from postpy.milter import protocol as p
from postpy.milter.client import Milter, MilterError, MilterSettings, Response
from postpy.util import maillog

DEFAULT_ACTIONS = ("tempfail", "accept", "reject", "quarantine")
REJECT_TEXT = "5.7.1 Command rejected"
TEMPFAIL_TEXT = "4.7.1 Service unavailable - try again later"
SHUTDOWN_TEXT = "4.7.0 Server closing connection"


@dataclass(frozen=True)
class Outcome:
    """What the chain decided for one event."""

    action: str = "continue"    # continue | reject | tempfail | discard
    code: int = 0
    text: str = ""              # "5.7.1 ..." for reject and tempfail

    @property
    def refused(self) -> bool:
        return self.action in ("reject", "tempfail")


CONTINUE = Outcome()


def _refusal(code: int, text: str) -> Outcome:
    return Outcome("tempfail" if code < 500 else "reject", code, text)


def default_outcome(action: str) -> Outcome:
    if action == "reject":
        return Outcome("reject", 550, REJECT_TEXT)
    return Outcome("tempfail", 451, TEMPFAIL_TEXT)


@dataclass
class Edits:
    """End-of-message modifications from every milter, in order."""

    headers: list[HeaderEdit] = field(default_factory=list)
    sender: str | None = None
    sender_args: str = ""
    add_recipients: list[Rcpt] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    body: bytearray | None = None
    hold: str = ""

    def __bool__(self) -> bool:
        return bool(self.headers or self.sender is not None or self.add_recipients
                    or self.delete_recipients or self.body is not None or self.hold)

    def message(self) -> CleanupEdits:
        return CleanupEdits(headers=self.headers, sender=self.sender,
                            add_recipients=self.add_recipients,
                            delete_recipients=self.delete_recipients,
                            replace_body=self.body is not None, hold=self.hold)

    def add(self, reply: p.Reply, leadspc: bool, body_limit: int) -> None:
        cmd, args = reply.command, reply.args
        if cmd in (p.SMFIR_ADDHEADER, p.SMFIR_INSHEADER, p.SMFIR_CHGHEADER):
            name, value = args
            if not name or any(c in name for c in ": \t\r\n") or not name.isascii():
                raise p.MilterProtocolError(f"bad header name {name[:40]!r}")
            value = value.replace("\r\n", "\n")
            if value and not leadspc:
                value = " " + value
            op = {p.SMFIR_ADDHEADER: "add", p.SMFIR_INSHEADER: "insert"}.get(cmd, "change")
            self.headers.append(HeaderEdit(op, name, value, reply.index))
        elif cmd == p.SMFIR_CHGFROM:
            self.sender = strip_brackets(args[0])
            self.sender_args = args[1] if len(args) > 1 else ""
        elif cmd in (p.SMFIR_ADDRCPT, p.SMFIR_ADDRCPT_PAR):
            notify = orcpt = ""
            for word in (args[1] if len(args) > 1 else "").split():
                key, _, val = word.partition("=")
                if key.upper() == "NOTIFY":
                    notify = val.upper()
                elif key.upper() == "ORCPT":
                    orcpt = val
            address = strip_brackets(args[0])
            if not address:
                raise p.MilterProtocolError("empty recipient")
            self.add_recipients.append(Rcpt(address=address, orcpt=orcpt, notify=notify))
        elif cmd == p.SMFIR_DELRCPT:
            self.delete_recipients.append(strip_brackets(args[0]))
        elif cmd == p.SMFIR_REPLBODY:
            if self.body is None:
                self.body = bytearray()
            self.body += reply.data.replace(b"\r\n", b"\n")
            if body_limit and len(self.body) > body_limit:
                raise p.MilterProtocolError("replacement body exceeds message_size_limit")
        elif cmd == p.SMFIR_QUARANTINE:
            self.hold = args[0] or "milter triggers HOLD action"


def strip_brackets(address: str) -> str:
    address = address.strip()
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


class MilterChain:
    def __init__(self, specs: list[str], settings: MilterSettings, default_action: str = "tempfail",
                 body_limit: int = 0) -> None:
        self.milters = [Milter(spec, settings) for spec in specs]
        self.default_action = default_action if default_action in DEFAULT_ACTIONS else "tempfail"
        self.body_limit = body_limit
        self.macros: dict[str, str] = {}          # name (without braces) -> value
        self.off: set[int] = set()                # left out for the session
        self.failed: set[int] = set()             # down: default action per message
        self.done: set[int] = set()               # accepted this message
        self.quarantine = ""                      # default action quarantine: hold every message
        self.discard = False                      # a milter said DISCARD before end of message

    def lookup(self, name: str) -> str | None:
        return self.macros.get(name)

    # -- the loop -----------------------------------------------------------
    def _active(self, per_message: bool) -> list[tuple[int, Milter]]:
        return [(i, m) for i, m in enumerate(self.milters)
                if i not in self.off and i not in self.failed
                and not (per_message and i in self.done)]

    def _fail(self, index: int, error: MilterError) -> Outcome:
        """Log the error and apply milter_default_action."""
        maillog.warning(f"{error}: milter_default_action = {self.default_action}")
        self.milters[index].close()
        if self.default_action in ("accept", "quarantine"):
            self.off.add(index)
            if self.default_action == "quarantine":
                self.quarantine = "milter triggers HOLD action"
            return CONTINUE
        self.failed.add(index)
        return default_outcome(self.default_action)

    def _judge(self, index: int, response: Response, per_message: bool) -> Outcome:
        reply = response.final
        cmd = reply.command
        if cmd == p.SMFIR_ACCEPT:
            (self.done if per_message else self.off).add(index)
            return CONTINUE
        if cmd == p.SMFIR_CONTINUE:
            return CONTINUE
        if cmd == p.SMFIR_REJECT:
            return Outcome("reject", 550, REJECT_TEXT)
        if cmd == p.SMFIR_TEMPFAIL:
            return Outcome("tempfail", 451, TEMPFAIL_TEXT)
        if cmd == p.SMFIR_SHUTDOWN:
            return Outcome("tempfail", 421, SHUTDOWN_TEXT)
        if cmd == p.SMFIR_DISCARD:
            return Outcome("discard")
        if cmd == p.SMFIR_REPLYCODE:
            try:
                code, text = p.parse_replycode(reply.args[0])
            except p.MilterProtocolError as exc:
                return self._fail(index, MilterError(f"{self.milters[index]}: {exc}"))
            return _refusal(code, text)
        return self._fail(index, MilterError(f"{self.milters[index]}: unexpected reply {cmd!r}"))

    async def _event(self, command: bytes, packet: bytes, per_message: bool = True) -> Outcome:
        if per_message and self.failed:
            return default_outcome(self.default_action)
        for index, milter in self._active(per_message):
            try:
                response = await milter.command(command, packet, self.lookup)
            except MilterError as exc:
                outcome = self._fail(index, exc)
            else:
                outcome = self._judge(index, response, per_message)
            if outcome.action == "discard":
                self.discard = True
                return outcome
            if outcome.refused:
                return outcome
        return CONTINUE

    # -- SMTP events ----------------------------------------------------------------
    async def connect(self, hostname: str, family: bytes, port: int, address: str) -> Outcome:
        for index, milter in enumerate(self.milters):
            if milter.connected:
                continue
            try:
                await milter.open()
            except MilterError as exc:
                self._fail(index, exc)
        return await self._event(p.SMFIC_CONNECT, p.connect(hostname, family, port, address),
                                 per_message=False)

    async def helo(self, name: str) -> Outcome:
        return await self._event(p.SMFIC_HELO, p.helo(name), per_message=False)

    async def mail(self, sender: str, args: list[str]) -> Outcome:
        self.done.clear()
        self.discard = False
        return await self._event(p.SMFIC_MAIL, p.mail(sender, args))

    async def rcpt(self, recipient: str, args: list[str]) -> Outcome:
        return await self._event(p.SMFIC_RCPT, p.rcpt(recipient, args))

    async def data(self) -> Outcome:
        return await self._event(p.SMFIC_DATA, p.simple(p.SMFIC_DATA))

    async def header(self, name: str, value: str) -> Outcome:
        return await self._event(p.SMFIC_HEADER, p.header(name, value))

    async def eoh(self) -> Outcome:
        return await self._event(p.SMFIC_EOH, p.simple(p.SMFIC_EOH))

    async def body(self, chunk: bytes) -> Outcome:
        for start in range(0, len(chunk), p.CHUNK):
            outcome = await self._event(p.SMFIC_BODY, p.body(chunk[start:start + p.CHUNK]))
            if outcome.action != "continue":
                return outcome
        return CONTINUE

    async def unknown(self, command: str) -> Outcome:
        return await self._event(p.SMFIC_UNKNOWN, p.unknown(command), per_message=False)

    async def eom(self, edits: Edits) -> Outcome:
        """End of message: each milter's verdict, its changes added to ``edits``."""
        if self.failed:
            return default_outcome(self.default_action)
        for index, milter in self._active(per_message=True):
            try:
                response = await milter.command(p.SMFIC_BODYEOB, p.simple(p.SMFIC_BODYEOB), self.lookup)
                neg = milter.negotiated
                leadspc = neg is not None and bool(neg.steps & p.SMFIP_HDR_LEADSPC)
                for mod in response.modifications:
                    edits.add(mod, leadspc, self.body_limit)
            except MilterError as exc:
                outcome = self._fail(index, exc)
            except p.MilterProtocolError as exc:
                outcome = self._fail(index, MilterError(f"{milter}: {exc}"))
            else:
                outcome = self._judge(index, response, per_message=True)
            if outcome.action != "continue":
                return outcome
        if self.quarantine and not edits.hold:
            edits.hold = self.quarantine
        return CONTINUE

    async def abort(self) -> None:
        """The transaction ended without end of message (RSET, reject, QUIT)."""
        for index, milter in self._active(per_message=False):
            try:
                await milter.command(p.SMFIC_ABORT, p.simple(p.SMFIC_ABORT))
            except MilterError as exc:
                self._fail(index, exc)
        self.done.clear()
        self.discard = False

    async def quit(self) -> None:
        for _index, milter in self._active(per_message=False):
            try:
                await milter.command(p.SMFIC_QUIT, p.simple(p.SMFIC_QUIT))
            except MilterError:
                pass
        for milter in self.milters:
            milter.close()


def family_of(addr: str) -> bytes:
    if not addr:
        return p.SMFIA_UNKNOWN
    return p.SMFIA_INET6 if ":" in addr else p.SMFIA_INET

