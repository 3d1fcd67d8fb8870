"""smtpd's access restrictions: which lists run when, and what each name does.

The lists, in Postfix's order (``smtpd_*_restrictions``): ``client``,
``helo``, ``sender``, ``relay``, ``recipient``, ``data``, ``eod``.  Each is
evaluated word by word until a restriction permits (that list is done; the
next list still runs) or rejects (the command is refused).  A list that
ends without a decision permits.  With ``smtpd_delay_reject = yes`` (the
default) the client, HELO and sender lists wait for RCPT TO and run before
the relay and recipient lists, for every recipient; with ``no`` they run at
the connection (the refusal replaces the greeting; every later command but
QUIT gets ``503 5.7.0 Error: access denied for name[addr]``), at HELO/EHLO
and at MAIL.  ``data`` runs at DATA, ``eod`` after the final dot.

Conditional results (access(5)): DEFER_IF_PERMIT remembers a deferral
that is given if the command would otherwise be accepted (from the client,
HELO and sender stages it waits for RCPT); DEFER_IF_REJECT turns a later
5xx refusal into that 4xx deferral.  ``warn_if_reject`` makes the next
restriction log ``reject_warning: ...`` instead of refusing.  A class
named in ``smtpd_restriction_classes`` is a list of its own, usable in a
list or as a table result.

:data:`TABLE` maps each restriction name to its function.  An unknown name
costs a warning and ``451 4.3.5 Server configuration error``, never an
accepted message.  The domain questions (local, relay, unlisted
recipients, sender logins) are :class:`postpy.smtpd.relay.RelayPolicy`'s,
unchanged; table keys and results are :mod:`postpy.smtpd.access`, DNS lists
:mod:`postpy.smtpd.dnsbl`, policy servers :mod:`postpy.smtpd.policy`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from postpy.mail.address import split_address
from postpy.sasl import senderlogin
from postpy.smtpd import access, builtin_checks, dnsbl, replies
from postpy.smtpd.dnsbl import FilterError, ListSpec
from postpy.smtpd.dnsquery import Lookups
from postpy.smtpd.peername import PeerName
from postpy.smtpd.relay import Recipient, RelayPolicy
from postpy.smtpd.replies import Reply
from postpy.smtpd.restriction_config import RestrictionConfig
from postpy.smtpd.verdict import (
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    NOTHING,
    PERMIT,
    PERMITTED,
    REJECT,
    MessageActions,
    Outcome,
    Subject,
    rejected,
)
from postpy.tables.maps import TableError, lookup_in_maps
from postpy.util import maillog

MAX_DEPTH = 10


@dataclass
class Request:
    """What the restrictions look at, as the session knows it now."""

    state: str                      # CONNECT, HELO, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE
    client_addr: str
    client_name: str = "unknown"
    peer: PeerName = field(default_factory=PeerName)
    client_port: str = ""
    server_addr: str = ""
    server_port: str = ""
    trusted: bool = False
    helo: str = ""
    protocol: str = "SMTP"
    sender: str | None = None
    recipient: str | None = None    # as written
    recipient_address: str = ""     # route stripped
    recipient_count: int = 0
    size: int = 0
    queue_id: str = ""
    instance: str = ""
    sasl_username: str = ""
    sasl_method: str = ""
    tls: tuple[str, str, str] = ("", "", "")   # protocol, cipher, bits
    pipelining_abuse: bool = False
    dns: Lookups = field(default_factory=lambda: Lookups(None))
    carried_defer: Reply | None = None          # DEFER_IF_PERMIT from earlier stages

    def rcpt(self) -> Recipient:
        return Recipient(written=self.recipient or "", address=self.recipient_address,
                         client_addr=self.client_addr, server_addr=self.server_addr,
                         trusted=self.trusted, sender=self.sender or "",
                         sasl_username=self.sasl_username)


@dataclass
class StageResult:
    reply: Reply | None = None              # the refusal; None: go on
    disconnect: bool = False
    actions: MessageActions = field(default_factory=MessageActions)
    notes: list[tuple[str, str]] = field(default_factory=list)   # (action, text) to log
    carry: Reply | None = None              # a DEFER_IF_PERMIT for a later stage


def subject_for(kind: str, req: Request) -> Subject:
    if kind == "client":
        return Subject(f"{req.client_name}[{req.client_addr}]", "Client host", "client")
    if kind == "helo":
        return Subject(req.helo, "Helo command", "helo")
    if kind == "sender":
        return Subject(req.sender or "", "Sender address", "sender")
    if kind == "data":
        return Subject("DATA", "Data command", "data")
    if kind == "eod":
        return Subject("END-OF-MESSAGE", "End-of-data", "eod")
    return Subject(req.recipient or "", "Recipient address", "recipient")


Func = Callable[["Evaluation", str, Subject], Awaitable[Outcome]]
ARGUMENT = frozenset({
    "check_client_access", "check_reverse_client_hostname_access", "check_helo_access",
    "check_sender_access", "check_recipient_access", "check_policy_service",
    "reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_sender", "reject_rhsbl_helo",
    "reject_rhsbl_recipient", "permit_dnswl_client", "sleep",
})


class Evaluation:
    """One command's pass through its lists."""

    def __init__(self, cfg: RestrictionConfig, relay: RelayPolicy, req: Request) -> None:
        self.cfg = cfg
        self.relay = relay
        self.req = req
        self.defer_if_permit: Reply | None = req.carried_defer
        self.defer_if_reject: Reply | None = None
        self.warn_next = False
        self.result = StageResult()
        self.depth = 0

    # -- lists ------------------------------------------------------------------
    async def run(self, kinds: list[str], *, final: bool = True) -> StageResult:
        """Evaluate the lists ``kinds``; ``final``: a pending DEFER_IF_PERMIT
        is given now (else it is carried to a later stage)."""
        for kind in kinds:
            outcome = await self.run_list(self.cfg.list_for(kind), subject_for(kind, self.req))
            if outcome.kind == REJECT:
                self.result.reply = outcome.reply
                self.result.disconnect = outcome.disconnect
                self.result.actions = MessageActions()
                return self.result
        if self.defer_if_permit is not None:
            if final:
                self.result.reply = self.defer_if_permit
                self.result.actions = MessageActions()
            else:
                self.result.carry = self.defer_if_permit
        return self.result

    async def run_list(self, words: list[str], subject: Subject) -> Outcome:
        """PERMIT, REJECT or DUNNO (the list ended)."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                maillog.warning(f"restriction class nesting deeper than {MAX_DEPTH}: {' '.join(words)}")
                return Outcome(REJECT, replies.CONFIG_ERROR)
            i = 0
            while i < len(words):
                name = words[i].lower()
                arg = ""
                if name in ARGUMENT:
                    if i + 1 >= len(words):
                        maillog.warning(f"restriction {name} needs an argument")
                        return Outcome(REJECT, replies.CONFIG_ERROR)
                    arg = words[i + 1]
                    i += 1
                i += 1
                if name == "warn_if_reject":
                    self.warn_next = True
                    continue
                warn, self.warn_next = self.warn_next, False
                outcome = await self.apply(name, arg, subject)
                if outcome.kind == REJECT and outcome.reply is not None:
                    if warn:
                        self.result.notes.append(("reject_warning", str(outcome.reply)))
                        continue
                    if self.defer_if_reject is not None and outcome.reply.code >= 500:
                        return Outcome(REJECT, self.defer_if_reject)
                    return outcome
                if outcome.kind == PERMIT:
                    return outcome
                if outcome.kind == DEFER_IF_PERMIT and self.defer_if_permit is None and not warn:
                    self.defer_if_permit = outcome.reply
                elif outcome.kind == DEFER_IF_REJECT and self.defer_if_reject is None:
                    self.defer_if_reject = outcome.reply
            return NOTHING
        finally:
            self.depth -= 1

    async def apply(self, name: str, arg: str, subject: Subject) -> Outcome:
        func = TABLE.get(name)
        if func is not None:
            return await func(self, arg, subject)
        if name in self.cfg.classes:
            return await self.run_list(self.cfg.classes[name], subject)
        maillog.warning(f"unknown smtpd restriction: \"{name}\"")
        return Outcome(REJECT, replies.CONFIG_ERROR)

    def is_restriction(self, word: str) -> bool:
        word = word.lower()
        return word in TABLE or word in self.cfg.classes or word == "warn_if_reject"

    # -- table results ----------------------------------------------------------------
    async def table_result(self, value: str, subject: Subject, source: str) -> Outcome:
        """Apply an access(5) result (from a table or a policy server)."""
        result = access.interpret(value, subject, self.cfg.access, self.is_restriction)
        if result.error:
            maillog.warning(f"{source}: {result.error}")
            return Outcome(REJECT, replies.CONFIG_ERROR)
        if result.log is not None:
            self.result.notes.append(result.log)
        self.result.actions.merge(result.actions)
        if result.restrictions:
            return await self.run_list(result.restrictions, subject)
        return result.outcome

    async def check_table(self, spec: str, keys: list[str], whole: str, subject: Subject) -> Outcome:
        try:
            value = access.find(spec, keys, whole)
        except TableError as exc:
            maillog.warning(f"{spec} lookup error for \"{whole}\": {exc}")
            return Outcome(REJECT, Reply.of(451, f"4.3.0 <{subject.what}>: Temporary lookup failure"))
        if value is None:
            return NOTHING
        return await self.table_result(value, subject, f"access table {spec}")

    # -- helpers ---------------------------------------------------------------------------
    def client_subject(self) -> Subject:
        return subject_for("client", self.req)

    def is_destination(self, domain: str) -> bool:
        """Is this host the final destination of ``domain`` (local or virtual)?"""
        try:
            return self.relay.is_local_domain(domain) or \
                self.relay.tables.is_virtual_mailbox_domain(domain) or \
                self.relay.mapped.is_alias_domain(domain)
        except TableError:
            return False


# -- the restrictions ----------------------------------------------------------------------

async def _permit(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return PERMITTED


async def _reject(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return Outcome(REJECT, rejected(ev.cfg.reject_code, f"{str(ev.cfg.reject_code)[0]}.7.1",
                                    subject, "Access denied"))


async def _defer(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return Outcome(REJECT, rejected(ev.cfg.defer_code, "4.7.1", subject, "Try again later"))


async def _defer_if_permit(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return Outcome(DEFER_IF_PERMIT, rejected(ev.cfg.defer_code, "4.7.1", subject,
                                             "defer_if_permit requested"))


async def _defer_if_reject(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return Outcome(DEFER_IF_REJECT, rejected(ev.cfg.defer_code, "4.7.1", subject,
                                             "defer_if_reject requested"))


async def _permit_mynetworks(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return PERMITTED if ev.req.trusted else NOTHING


async def _permit_sasl(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return PERMITTED if ev.req.sasl_username else NOTHING


def _unauth(ev: Evaluation, code: int) -> Reply | None:
    if ev.req.recipient is None:
        return None
    return ev.relay._unauth_destination(ev.req.rcpt(), code)


async def _reject_unauth_destination(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    reply = _unauth(ev, 554)
    return NOTHING if reply is None else Outcome(REJECT, reply)


async def _defer_unauth_destination(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    reply = _unauth(ev, 450)
    return NOTHING if reply is None else Outcome(REJECT, reply)


async def _permit_auth_destination(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if ev.req.recipient is None:
        return NOTHING
    return PERMITTED if _unauth(ev, 554) is None else NOTHING


async def _reject_unlisted_recipient(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if ev.req.recipient is None:
        return NOTHING
    reply = ev.relay.unlisted(ev.req.rcpt())
    return NOTHING if reply is None else Outcome(REJECT, reply)


async def _reject_unlisted_sender(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    sender = ev.req.sender
    if not sender:
        return NOTHING
    as_rcpt = Recipient(written=sender, address=sender, client_addr=ev.req.client_addr)
    reply = ev.relay.unlisted(as_rcpt)
    if reply is None or reply.code < 500:
        return NOTHING if reply is None else Outcome(REJECT, reply)
    text = reply.text.split(": Recipient address rejected: ", 1)[-1]
    return Outcome(REJECT, rejected(reply.code, "5.1.0", subject_for("sender", ev.req), text))


async def _sender_login(ev: Evaluation, name: str) -> Outcome:
    refusal = ev.relay.sender_login.check(name, ev.req.sender or "", ev.req.sasl_username)
    return NOTHING if refusal is None else Outcome(REJECT, Reply.of(refusal.code, refusal.text))


def _sender_login_func(name: str) -> Func:
    async def check(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
        if ev.req.sender is None:
            return NOTHING
        return await _sender_login(ev, name)
    return check


async def _non_fqdn_helo(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    helo = ev.req.helo
    if not helo or not builtin_checks.non_fqdn_helo(helo):
        return NOTHING
    return Outcome(REJECT, rejected(ev.cfg.non_fqdn_code, f"{str(ev.cfg.non_fqdn_code)[0]}.5.2",
                                    subject_for("helo", ev.req), "need fully-qualified hostname"))


async def _invalid_helo(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    helo = ev.req.helo
    if not helo or not builtin_checks.invalid_helo(helo):
        return NOTHING
    code = ev.cfg.invalid_hostname_code
    return Outcome(REJECT, rejected(code, f"{str(code)[0]}.5.2", subject_for("helo", ev.req),
                                    "Invalid name"))


async def _non_fqdn_sender(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if not ev.req.sender or not builtin_checks.non_fqdn_address(ev.req.sender):
        return NOTHING
    code = ev.cfg.non_fqdn_code
    return Outcome(REJECT, rejected(code, f"{str(code)[0]}.5.2", subject_for("sender", ev.req),
                                    "need fully-qualified address"))


async def _non_fqdn_recipient(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if not ev.req.recipient or not builtin_checks.non_fqdn_address(ev.req.recipient_address):
        return NOTHING
    code = ev.cfg.non_fqdn_code
    return Outcome(REJECT, rejected(code, f"{str(code)[0]}.5.2", subject_for("recipient", ev.req),
                                    "need fully-qualified address"))


async def _unknown_domain(ev: Evaluation, kind: str) -> Outcome:
    address = ev.req.sender if kind == "sender" else (
        ev.req.recipient_address if ev.req.recipient is not None else None)
    if not address:
        return NOTHING
    domain = split_address(address)[1].lower()
    if not domain or ev.is_destination(domain):
        return NOTHING
    status = await builtin_checks.domain_status(ev.req.dns, domain)
    subject = subject_for(kind, ev.req)
    detail = "8" if kind == "sender" else "2"
    if status == "ok":
        return NOTHING
    if status == "nullmx":
        if kind == "sender":
            return Outcome(REJECT, rejected(550, "5.7.27", subject,
                                            f"Domain {domain} does not accept mail (nullMX)"))
        return Outcome(REJECT, rejected(556, "5.1.10", subject,
                                        f"Domain {domain} does not accept mail (nullMX)"))
    if status == "temp":
        reply = rejected(450, f"4.1.{detail}", subject, "Domain not found")
        return Outcome(DEFER_IF_PERMIT if ev.cfg.address_tempfail == "defer_if_permit" else REJECT,
                       reply)
    code = ev.cfg.unknown_address_code
    return Outcome(REJECT, rejected(code, f"{str(code)[0]}.1.{detail}", subject, "Domain not found"))


async def _unknown_sender_domain(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return await _unknown_domain(ev, "sender")


async def _unknown_recipient_domain(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return await _unknown_domain(ev, "recipient")


async def _unknown_client(ev: Evaluation, status: str, what: str) -> Outcome:
    if status == "ok":
        return NOTHING
    code = 450 if status == "temp" else ev.cfg.unknown_client_code
    return Outcome(REJECT, Reply.of(code, f"{str(code)[0]}.7.25 Client host rejected: cannot find "
                                          f"your {what}, [{ev.req.client_addr}]"))


async def _unknown_client_hostname(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return await _unknown_client(ev, ev.req.peer.status, "hostname")


async def _unknown_reverse_hostname(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return await _unknown_client(ev, ev.req.peer.reverse_status, "reverse hostname")


async def _unauth_pipelining(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if not ev.req.pipelining_abuse:
        return NOTHING
    return Outcome(REJECT, rejected(503, "5.5.0", subject, "Improper use of SMTP command pipelining"))


async def _sleep(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    try:
        seconds = float(arg)
    except ValueError:
        maillog.warning(f"sleep: bad argument \"{arg}\"")
        return Outcome(REJECT, replies.CONFIG_ERROR)
    await asyncio.sleep(max(0.0, seconds))
    return NOTHING


# -- access tables -------------------------------------------------------------------------

async def _client_access(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    req = ev.req
    keys = access.host_keys(req.client_name, req.client_addr, ev.cfg.parent_matches)
    whole = req.client_name if req.client_name != "unknown" else req.client_addr
    outcome = await ev.check_table(arg, keys, whole, ev.client_subject())
    if outcome is NOTHING and whole != req.client_addr and access.split_spec(arg)[0] in access.PATTERN_TYPES:
        outcome = await ev.check_table(arg, [req.client_addr], req.client_addr, ev.client_subject())
    return outcome


async def _reverse_client_access(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    req = ev.req
    name = req.peer.reverse_name
    keys = access.host_keys(name, req.client_addr, ev.cfg.parent_matches)
    whole = name if name != "unknown" else req.client_addr
    return await ev.check_table(arg, keys, whole, ev.client_subject())


async def _helo_access(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    helo = ev.req.helo
    if not helo:
        return NOTHING
    keys = access.parent_keys(helo.lower(), ev.cfg.parent_matches)
    return await ev.check_table(arg, keys, helo, subject_for("helo", ev.req))


async def _sender_access(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    sender = ev.req.sender
    if sender is None:
        return NOTHING
    keys = access.mail_keys(sender, ev.cfg.recipient_delimiter, ev.cfg.parent_matches, ev.cfg.null_key)
    return await ev.check_table(arg, keys, sender or ev.cfg.null_key, subject_for("sender", ev.req))


async def _recipient_access(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    if ev.req.recipient is None:
        return NOTHING
    address = ev.req.recipient_address
    keys = access.mail_keys(address, ev.cfg.recipient_delimiter, ev.cfg.parent_matches, ev.cfg.null_key)
    return await ev.check_table(arg, keys, address, subject_for("recipient", ev.req))


# -- DNS lists -------------------------------------------------------------------------------

def _list_spec(arg: str) -> ListSpec | None:
    try:
        return ListSpec.parse(arg)
    except FilterError as exc:
        maillog.warning(str(exc))
        return None


async def _dnsbl(ev: Evaluation, arg: str, what: str | None, label: str) -> Outcome:
    """``what``: the client address (reject_rbl_client) or a domain (RHS lists)."""
    spec = _list_spec(arg)
    if spec is None:
        return Outcome(REJECT, replies.CONFIG_ERROR)
    if not what:
        return NOTHING
    if label == "Client host" and what == ev.req.client_addr:
        name = dnsbl.client_query(what, spec.zone)
    else:
        name = f"{what.rstrip('.')}.{spec.zone}"
    if name is None:
        return NOTHING
    listing = await dnsbl.check(ev.req.dns, name, spec)
    if listing.failed:
        maillog.info(f"DNS list {spec.zone}: no answer for {name}; treated as not listed")
    if not listing.listed:
        return NOTHING
    try:
        template = lookup_in_maps(ev.cfg.rbl_reply_maps, spec.zone) if ev.cfg.rbl_reply_maps else None
    except TableError as exc:
        maillog.warning(f"rbl_reply_maps lookup error for {spec.zone}: {exc}")
        template = None
    req = ev.req
    values = {
        "rbl_code": str(ev.cfg.rbl_code), "rbl_domain": spec.zone, "rbl_reason": listing.reason,
        "rbl_txt": listing.reason, "rbl_class": label, "rbl_what": what,
        "client_address": req.client_addr, "client_name": req.client_name,
        "reverse_client_name": req.peer.reverse_name, "helo_name": req.helo,
        "sender": req.sender or "", "sender_name": split_address(req.sender or "")[0],
        "sender_domain": split_address(req.sender or "")[1],
        "recipient": req.recipient_address, "recipient_name": split_address(req.recipient_address)[0],
        "recipient_domain": split_address(req.recipient_address)[1],
        "client": f"{req.client_name}[{req.client_addr}]",
    }
    return Outcome(REJECT, dnsbl.reply(template or ev.cfg.default_rbl_reply, values, ev.cfg.expand,
                                       ev.cfg.rbl_code))


async def _rbl_client(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    return await _dnsbl(ev, arg, ev.req.client_addr, "Client host")


async def _rhsbl_client(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    name = ev.req.client_name
    return await _dnsbl(ev, arg, name if name != "unknown" else None, "Client host")


async def _rhsbl_sender(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    domain = split_address(ev.req.sender or "")[1].lower()
    return await _dnsbl(ev, arg, domain or None, "Sender address")


async def _rhsbl_recipient(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    domain = split_address(ev.req.recipient_address)[1].lower() if ev.req.recipient else ""
    return await _dnsbl(ev, arg, domain or None, "Recipient address")


async def _rhsbl_helo(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    helo = ev.req.helo.lower()
    usable = helo and not helo.startswith("[") and "." in helo
    return await _dnsbl(ev, arg, helo if usable else None, "Helo command")


async def _dnswl_client(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    spec = _list_spec(arg)
    if spec is None:
        return Outcome(REJECT, replies.CONFIG_ERROR)
    if subject.kind == "recipient" and _unauth(ev, 554) is not None:
        return NOTHING              # never an open relay through an allowlist
    name = dnsbl.client_query(ev.req.client_addr, spec.zone)
    if name is None:
        return NOTHING
    listing = await dnsbl.check(ev.req.dns, name, spec)
    if listing.failed:
        return Outcome(DEFER_IF_REJECT, rejected(450, "4.7.1", ev.client_subject(),
                                                 f"Service unavailable; DNS allowlist {spec.zone} did not answer"))
    return PERMITTED if listing.listed else NOTHING


# -- policy servers ---------------------------------------------------------------------------

def policy_attributes(req: Request, context: str, version: str) -> dict[str, str]:
    protocol, cipher, bits = req.tls
    return {
        "request": "smtpd_access_policy", "protocol_state": req.state,
        "protocol_name": req.protocol, "helo_name": req.helo, "queue_id": req.queue_id,
        "sender": req.sender or "", "recipient": req.recipient_address,
        "recipient_count": str(req.recipient_count), "client_address": req.client_addr,
        "client_name": req.client_name, "reverse_client_name": req.peer.reverse_name,
        "instance": req.instance, "sasl_method": req.sasl_method,
        "sasl_username": req.sasl_username, "size": str(req.size),
        "encryption_protocol": protocol, "encryption_cipher": cipher, "encryption_keysize": bits,
        "client_port": req.client_port, "policy_context": context,
        "server_address": req.server_addr, "server_port": req.server_port,
        "compatibility_level": "3.6", "mail_version": version,
    }


async def _policy(ev: Evaluation, arg: str, subject: Subject) -> Outcome:
    settings = ev.cfg.policy.settings
    action = await ev.cfg.policy.ask(arg, policy_attributes(ev.req, settings.policy_context,
                                                                 ev.cfg.mail_version))
    return await ev.table_result(action, subject, f"policy server {arg}")


TABLE: dict[str, Func] = {
    "permit": _permit,
    "reject": _reject,
    "defer": _defer,
    "defer_if_permit": _defer_if_permit,
    "defer_if_reject": _defer_if_reject,
    "permit_mynetworks": _permit_mynetworks,
    "permit_sasl_authenticated": _permit_sasl,
    "reject_unauth_destination": _reject_unauth_destination,
    "defer_unauth_destination": _defer_unauth_destination,
    "permit_auth_destination": _permit_auth_destination,
    "reject_unlisted_recipient": _reject_unlisted_recipient,
    "reject_unlisted_sender": _reject_unlisted_sender,
    "reject_non_fqdn_helo_hostname": _non_fqdn_helo,
    "reject_non_fqdn_hostname": _non_fqdn_helo,
    "reject_invalid_helo_hostname": _invalid_helo,
    "reject_invalid_hostname": _invalid_helo,
    "reject_non_fqdn_sender": _non_fqdn_sender,
    "reject_non_fqdn_recipient": _non_fqdn_recipient,
    "reject_unknown_sender_domain": _unknown_sender_domain,
    "reject_unknown_recipient_domain": _unknown_recipient_domain,
    "reject_unknown_client_hostname": _unknown_client_hostname,
    "reject_unknown_client": _unknown_client_hostname,
    "reject_unknown_reverse_client_hostname": _unknown_reverse_hostname,
    "reject_unauth_pipelining": _unauth_pipelining,
    "sleep": _sleep,
    "check_client_access": _client_access,
    "check_reverse_client_hostname_access": _reverse_client_access,
    "check_helo_access": _helo_access,
    "check_sender_access": _sender_access,
    "check_recipient_access": _recipient_access,
    "reject_rbl_client": _rbl_client,
    "reject_rhsbl_client": _rhsbl_client,
    "reject_rhsbl_sender": _rhsbl_sender,
    "reject_rhsbl_recipient": _rhsbl_recipient,
    "reject_rhsbl_helo": _rhsbl_helo,
    "permit_dnswl_client": _dnswl_client,
    "check_policy_service": _policy,
    **{name: _sender_login_func(name) for name in sorted(senderlogin.RESTRICTIONS)},
}


def unknown_names(cfg: RestrictionConfig) -> list[str]:
    """Words in the lists and classes that are neither restrictions nor classes."""
    found: list[str] = []
    for words in [*cfg.lists.values(), *cfg.classes.values()]:
        skip = False
        for word in words:
            if skip:
                skip = False
                continue
            name = word.lower()
            skip = name in ARGUMENT
            if name not in TABLE and name not in cfg.classes and name != "warn_if_reject" \
                    and name not in found:
                found.append(name)
    return found


# -- stages ------------------------------------------------------------------------------------

@dataclass
class Restrictions:
    """The restrictions of one smtpd process, stage by stage."""

    cfg: RestrictionConfig
    relay: RelayPolicy

    async def _run(self, req: Request, kinds: list[str], final: bool = True) -> StageResult:
        return await Evaluation(self.cfg, self.relay, req).run(kinds, final=final)

    async def connect(self, req: Request) -> StageResult | None:
        if self.cfg.delay_reject:
            return None
        return await self._run(req, ["client"], final=False)

    async def helo(self, req: Request) -> StageResult | None:
        if self.cfg.delay_reject:
            return None
        return await self._run(req, ["helo"], final=False)

    async def mail(self, req: Request) -> StageResult | None:
        if self.cfg.delay_reject:
            return None
        return await self._run(req, ["sender"], final=False)

    async def rcpt(self, req: Request) -> StageResult:
        early = ["client", "helo", "sender"] if self.cfg.delay_reject else []
        result = await self._run(req, [*early, "relay", "recipient"])
        if result.reply is None and self.relay.reject_unlisted:
            reply = self.relay.unlisted(req.rcpt())
            if reply is not None:
                result.reply, result.actions = reply, MessageActions()
        return result

    async def data(self, req: Request) -> StageResult:
        return await self._run(req, ["data"])

    async def end_of_data(self, req: Request) -> StageResult:
        return await self._run(req, ["eod"])


def check_recipient_now(relay: RelayPolicy, rcpt: Recipient) -> Reply | None:
    """RCPT restrictions of ``relay``'s own lists, without DNS or policy servers:
    the synchronous check the unit tests and tools use."""
    cfg = RestrictionConfig(lists={"sender": relay.sender_restrictions,
                                   "relay": relay.relay_restrictions,
                                   "recipient": relay.recipient_restrictions},
                            recipient_delimiter=relay.recipient_delimiter)
    req = Request(state="RCPT", client_addr=rcpt.client_addr, server_addr=rcpt.server_addr,
                  trusted=rcpt.trusted, sender=rcpt.sender, recipient=rcpt.written,
                  recipient_address=rcpt.address, sasl_username=rcpt.sasl_username)
    result = asyncio.run(Restrictions(cfg, relay).rcpt(req))
    return result.reply


def encode_actions(actions: MessageActions) -> dict[str, str]:
    """Cleanup envelope attributes for HOLD, DISCARD and PREPEND."""
    attrs = {}
    if actions.hold:
        attrs["hold"] = actions.hold
    if actions.discard:
        attrs["discard"] = actions.discard
    if actions.prepend:
        attrs["prepend"] = json.dumps(actions.prepend)
    return attrs
