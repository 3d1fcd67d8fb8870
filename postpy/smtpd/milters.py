"""smtpd and its milters (``smtpd_milters``): events at each SMTP stage.

Where it sits in the mail path: between the client and cleanup.  Each
session with milters configured (and not turned off by
``receive_override_options = no_milters``) owns one
:class:`postpy.milter.chain.MilterChain`; the command modules call the
functions here at each stage, and a milter's refusal is answered and
logged like Postfix's::

    NOQUEUE: milter-reject: RCPT from host[addr]: 550 5.7.1 Command rejected; from=<a> to=<b> proto=ESMTP helo=<h>
    ID: milter-reject: END-OF-MESSAGE from host[addr]: 5.7.1 text; from=<a> to=<b> proto=ESMTP helo=<h>
    ID: milter-discard: END-OF-MESSAGE from host[addr]: milter triggers DISCARD action; from=...
    ID: milter-hold: END-OF-MESSAGE from host[addr]: milter triggers HOLD action; from=...

Stages: CONNECT (refusals and errors are given at each MAIL, so EHLO
still works), HELO/EHLO, MAIL, RCPT (a refusal refuses that recipient),
DATA (before ``354``; the queue ID, macro ``i``, is known from here on),
the header, end of header and body (in chunks, CRLF line ends) while the
content streams to cleanup, end of message after the last byte.  A
transaction that ends otherwise is followed by ``SMFIC_ABORT`` before the
next MAIL; the session's end sends ``SMFIC_QUIT``.

Design: smtpd runs the whole milter conversation, while it streams the
message to cleanup as before.  The modifications the milters ask for at
end of message (:class:`postpy.milter.chain.Edits`) go to cleanup as one
:class:`postpy.ipc.messages.CleanupEdits` (plus a replacement body) before
cleanup finishes the file (the envelope attribute ``milter_edits = yes``
announces them); cleanup writes the changed message and only then reports
the file durable, so the ``250`` acknowledges the filtered message, and
cleanup stays the one program that creates queue files.  A refusal,
tempfail or discard at end of message closes the cleanup conversation
without ``E``: nothing is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postpy.cleanup import overrides
from postpy.config.maincf import Config, ConfigError
from postpy.mail.headers import HeaderBlockReader
from postpy.milter import protocol as p
from postpy.milter.chain import DEFAULT_ACTIONS, Edits, MilterChain, Outcome, family_of
from postpy.milter.client import MilterSettings, parse_spec
from postpy.smtpd import events, replies
from postpy.smtpd.replies import Reply

if TYPE_CHECKING:
    from postpy.smtpd.handoff import Handoff
    from postpy.smtpd.session import Session

MACRO_PARAMS = {
    p.SMFIC_CONNECT: "milter_connect_macros", p.SMFIC_HELO: "milter_helo_macros",
    p.SMFIC_MAIL: "milter_mail_macros", p.SMFIC_RCPT: "milter_rcpt_macros",
    p.SMFIC_DATA: "milter_data_macros", p.SMFIC_EOH: "milter_end_of_header_macros",
    p.SMFIC_BODYEOB: "milter_end_of_data_macros", p.SMFIC_UNKNOWN: "milter_unknown_command_macros",
}


@dataclass
class MilterSetup:
    """smtpd's milter configuration (read once per process)."""

    specs: list[str]
    settings: MilterSettings
    default_action: str = "tempfail"
    daemon_name: str = ""
    version: str = ""
    defaults: dict[str, str] = field(default_factory=dict)    # milter_macro_defaults

    @classmethod
    def from_config(cls, cfg: Config, specs_param: str = "smtpd_milters") -> MilterSetup | None:
        specs = cfg.get_list(specs_param)
        if not specs or "no_milters" in overrides.parse(cfg.get("receive_override_options")):
            return None
        for spec in specs:
            try:
                parse_spec(spec)
            except ValueError as exc:
                raise ConfigError(f"{specs_param}: {exc}") from None
        action = cfg.get("milter_default_action").strip().lower()
        if action not in DEFAULT_ACTIONS:
            raise ConfigError(f"milter_default_action = {action}: use tempfail, accept, reject "
                              "or quarantine")
        if cfg.get("milter_protocol").strip() != str(p.VERSION):
            raise ConfigError(f"milter_protocol: only version {p.VERSION} is supported")
        defaults = {}
        for item in cfg.get_list("milter_macro_defaults"):
            name, _, value = item.partition("=")
            defaults[name.strip("{}")] = value
        settings = MilterSettings(
            connect_timeout=cfg.get_time("milter_connect_timeout"),
            command_timeout=cfg.get_time("milter_command_timeout"),
            content_timeout=cfg.get_time("milter_content_timeout"),
            macros={cmd: tuple(cfg.get_list(name)) for cmd, name in MACRO_PARAMS.items()})
        return cls(specs, settings, action, cfg.get("milter_macro_daemon_name"),
                   cfg.get("milter_macro_v"), defaults)


@dataclass
class SessionMilters:
    """A session's chain and what it carries between stages."""

    chain: MilterChain
    setup: MilterSetup
    refusal: Outcome | None = None        # from CONNECT or HELO, given at MAIL
    feed: HeaderBlockReader | None = None   # the header block of the message in transit
    headers_sent: bool = False
    outcome: Outcome | None = None        # a refusal or discard during the content
    in_message: bool = False              # MAIL sent, no end of message yet


def _reply(outcome: Outcome) -> Reply:
    return replies.R(outcome.code, outcome.text)


def _log(s: Session, action: str, stage: str, text: str, *, recipient: str | None = None,
         queue_id: str = "NOQUEUE") -> None:
    events.restriction(action, stage, s.client.label, text, queue_id=queue_id,
                       sender=s.txn.sender, recipient=recipient, proto=s.protocol, helo=s.helo)


def _refuse(s: Session, stage: str, outcome: Outcome, *, recipient: str | None = None,
            queue_id: str = "NOQUEUE") -> Reply:
    reply = _reply(outcome)
    _log(s, "milter-reject", stage, f"{reply.code} {reply.text}", recipient=recipient,
         queue_id=queue_id)
    if outcome.code == 421:
        s.quit = True
    return reply


async def connect(s: Session, setup: MilterSetup | None) -> None:
    """Open the session's milters and send CONNECT."""
    if setup is None:
        return
    chain = MilterChain(setup.specs, setup.settings, setup.default_action,
                        body_limit=s.settings.message_size_limit)
    c = s.client
    chain.macros.update(setup.defaults)
    chain.macros.update({
        "j": s.settings.hostname, "_": f"{c.name} [{c.addr}]", "daemon_name": setup.daemon_name,
        "daemon_addr": c.server_addr, "daemon_port": c.server_port, "v": setup.version,
        "client_addr": c.addr, "client_name": c.name, "client_port": c.port,
        "client_ptr": c.name, "client_resolve": "OK" if c.name != "unknown" else "FAIL",
        "client_connections": "0",
    })
    s.milters = SessionMilters(chain, setup)
    port = int(c.port) if c.port.isdigit() else 0
    outcome = await chain.connect(c.name, family_of(c.addr), port, c.addr)
    if outcome.refused:
        s.milters.refusal = outcome


async def helo(s: Session) -> Reply | None:
    m = s.milters
    if m is None:
        return None
    tls_obj = s.channel.tls_object() if s.channel.tls_active else None
    if tls_obj is not None:
        cipher = tls_obj.cipher()
        m.chain.macros.update({"tls_version": tls_obj.version() or "",
                               "cipher": cipher[0] if cipher else "",
                               "cipher_bits": str(cipher[2]) if cipher else ""})
    outcome = await m.chain.helo(s.helo)
    if outcome.action == "reject":
        return _refuse(s, "HELO", outcome)
    if outcome.refused:
        m.refusal = outcome
    return None


async def mail(s: Session, sender: str, args: list[str]) -> Reply | None:
    m = s.milters
    if m is None:
        return None
    if m.in_message:
        await m.chain.abort()
    if m.refusal is not None:
        return _refuse(s, "MAIL", m.refusal)
    domain = sender.rpartition("@")[2] if "@" in sender else ""
    m.chain.macros.update({"mail_addr": sender, "mail_host": domain, "mail_mailer": "smtp",
                           "auth_type": s.sasl_method, "auth_authen": s.sasl_username,
                           "auth_author": s.sasl_username, "i": ""})
    for name in ("auth_type", "auth_authen", "auth_author", "i"):
        if not m.chain.macros[name]:
            del m.chain.macros[name]
    m.in_message = True
    outcome = await m.chain.mail(sender, args)
    return _refuse(s, "MAIL", outcome) if outcome.refused else None


async def rcpt(s: Session, written: str, address: str, args: list[str]) -> Reply | None:
    m = s.milters
    if m is None:
        return None
    m.chain.macros.update({"rcpt_addr": address, "rcpt_host": address.rpartition("@")[2],
                           "rcpt_mailer": "smtp"})
    outcome = await m.chain.rcpt(address, args)
    return _refuse(s, "RCPT", outcome, recipient=written) if outcome.refused else None


async def data(s: Session, handoff: Handoff) -> Reply | None:
    """DATA (or the first BDAT): the queue ID is known; the content follows."""
    m = s.milters
    if m is None:
        return None
    m.chain.macros["i"] = handoff.queue_id
    m.feed, m.headers_sent, m.outcome = HeaderBlockReader(), False, None
    outcome = await m.chain.data()
    if outcome.refused:
        handoff.abort()
        return _refuse(s, "DATA", outcome, queue_id=handoff.queue_id)
    if outcome.action == "discard":
        m.outcome = outcome
    return None


async def content(s: Session, data: bytes) -> None:
    """Message content (LF line ends) as it goes to cleanup."""
    m = s.milters
    if m is None or m.outcome is not None or m.feed is None:
        return
    if not m.headers_sent:
        if not m.feed.feed(data):
            return
        await _headers(m)
    elif data:
        _note(m, await m.chain.body(data.replace(b"\n", b"\r\n")))


def _note(m: SessionMilters, outcome: Outcome) -> None:
    if outcome.action != "continue":
        m.outcome = outcome


async def _headers(m: SessionMilters) -> None:
    assert m.feed is not None
    m.headers_sent = True
    for h in m.feed.headers:
        raw = h.raw.decode("utf-8", "surrogateescape").rstrip("\n")
        value = raw.partition(":")[2]
        outcome = await m.chain.header(h.name, value.lstrip(" \t") if not _leadspc(m) else value)
        if outcome.action != "continue":
            m.outcome = outcome
            return
    _note(m, await m.chain.eoh())
    body = m.feed.body_start
    if body and m.outcome is None:
        _note(m, await m.chain.body(body.replace(b"\n", b"\r\n")))


def _leadspc(m: SessionMilters) -> bool:
    """Every milter of the chain asked for header values as they are."""
    return all(ml.negotiated is not None and ml.negotiated.steps & p.SMFIP_HDR_LEADSPC
               for ml in m.chain.milters)


async def end_of_message(s: Session, handoff: Handoff) -> Reply | Edits | None:
    """After the last byte: a refusal (the handoff aborted), or the edits
    for cleanup (None without milters)."""
    m = s.milters
    if m is None:
        return None
    qid = handoff.queue_id
    if m.feed is not None and not m.headers_sent and m.outcome is None:
        m.feed.close()
        await _headers(m)
    edits = Edits()
    outcome = m.outcome or await m.chain.eom(edits)
    m.in_message = m.outcome is not None        # aborted mid-content: ABORT before the next MAIL
    m.feed = None
    to = s.txn.recipients[0].address if s.txn.recipients else None
    if outcome.refused:
        handoff.abort()
        reply = _reply(outcome)
        _log(s, "milter-reject", "END-OF-MESSAGE", f"{reply.code} {reply.text}", recipient=to,
             queue_id=qid)
        if outcome.code == 421:
            s.quit = True
        return reply
    if outcome.action == "discard" or m.chain.discard:
        handoff.abort()
        _log(s, "milter-discard", "END-OF-MESSAGE", "milter triggers DISCARD action",
             recipient=to, queue_id=qid)
        return replies.queued(qid)
    if edits.hold:
        _log(s, "milter-hold", "END-OF-MESSAGE", "milter triggers HOLD action",
             recipient=to, queue_id=qid)
    return edits


async def quit(s: Session) -> None:
    if s.milters is not None:
        await s.milters.chain.quit()

