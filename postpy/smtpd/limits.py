"""Per-client connection and rate limits, counted by anvil for every smtpd process.

Postfix's ``smtpd_client_*_limit`` parameters, checked where Postfix's
smtpd checks them, each against anvil's count for ``service:client_addr``
over ``anvil_rate_time_unit`` (:mod:`postpy.smtpd.anvil_client`,
:mod:`postpy.anvil.service`):

=========================================  =========  ======================================================
parameter                                  checked    reply (and the session goes on, except for 421)
=========================================  =========  ======================================================
smtpd_client_connection_count_limit        connect    421 4.7.0 HOST Error: too many connections from ADDR
smtpd_client_connection_rate_limit         connect    421 4.7.0 HOST Error: too many connections from ADDR
smtpd_client_message_rate_limit            MAIL       450 4.7.1 Error: too much mail from ADDR
smtpd_client_recipient_rate_limit          RCPT       450 4.7.1 Error: too many recipients from ADDR
smtpd_client_new_tls_session_rate_limit    STARTTLS   454 4.7.0 Error: too many new TLS sessions from NAME[ADDR]
smtpd_client_auth_rate_limit               AUTH       450 4.7.1 Error: too many AUTH commands from ADDR
=========================================  =========  ======================================================

Each refusal logs ``warning: <what> limit exceeded: N from NAME[ADDR] for
service SERVICE`` (:mod:`postpy.smtpd.events`).  A limit of 0 is off;
clients in ``smtpd_client_event_limit_exceptions`` (default
``$mynetworks``) are neither counted nor limited.  Only new TLS sessions
count (not resumed ones), after the handshake; the check comes before it
and, as in Postfix, sees the sessions before this one (so limit + 1 pass).
anvil is asked only when some limit is set, and when it cannot answer no
limit applies (mail is never refused because anvil is down).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postpy.config.maincf import Config
from postpy.smtpd import events, replies
from postpy.smtpd.anvil_client import AnvilClient
from postpy.smtpd.relay import NetworkList
from postpy.smtpd.replies import Reply
from postpy.smtpd.state import Client

if TYPE_CHECKING:
    from postpy.smtpd.session import Session


@dataclass
class ClientLimits:
    connection_count: int = 0
    connection_rate: int = 0
    message_rate: int = 0
    recipient_rate: int = 0
    newtls_rate: int = 0
    auth_rate: int = 0
    exceptions: NetworkList = field(default_factory=NetworkList)
    anvil: AnvilClient = field(default_factory=AnvilClient)

    @classmethod
    def from_config(cls, cfg: Config, exceptions: NetworkList) -> ClientLimits | None:
        """The limits, or None when every one is 0 (anvil is never asked then)."""
        limits = cls(
            connection_count=cfg.get_int("smtpd_client_connection_count_limit"),
            connection_rate=cfg.get_int("smtpd_client_connection_rate_limit"),
            message_rate=cfg.get_int("smtpd_client_message_rate_limit"),
            recipient_rate=cfg.get_int("smtpd_client_recipient_rate_limit"),
            newtls_rate=cfg.get_int("smtpd_client_new_tls_session_rate_limit"),
            auth_rate=cfg.get_int("smtpd_client_auth_rate_limit"),
            exceptions=exceptions)
        numbers = (limits.connection_count, limits.connection_rate, limits.message_rate,
                   limits.recipient_rate, limits.newtls_rate, limits.auth_rate)
        return limits if any(numbers) else None

    def applies(self, client: Client) -> bool:
        return not self.exceptions.matches(client.addr)


def ident(service: str, client: Client) -> str:
    return f"{service}:{client.addr}"


async def connect(limits: ClientLimits | None, client: Client, service: str,
                  hostname: str) -> tuple[bool, Reply | None]:
    """Register a new session: (registered with anvil, the 421 refusal or None)."""
    if limits is None or not limits.applies(client):
        return False, None
    reply = await limits.anvil.request("connect", ident(service, client))
    if reply is None:
        return False, None
    if limits.connection_count and reply.count > limits.connection_count:
        events.too_many_connections(client.label, reply.count, service)
        return True, replies.too_many_connections(hostname, client.addr)
    if limits.connection_rate and reply.rate > limits.connection_rate:
        events.limit_exceeded("Connection rate", reply.rate, client.label, service)
        return True, replies.too_many_connections(hostname, client.addr)
    return True, None


async def disconnect(limits: ClientLimits | None, client: Client, service: str) -> None:
    if limits is not None:
        await limits.anvil.request("disconnect", ident(service, client))


async def _event(s: Session, request: str, limit: int, what: str) -> int | None:
    """Count one event; its rate when that is over ``limit``, else None."""
    limits = s.settings.limits
    if limits is None or not limit or not limits.applies(s.client):
        return None
    reply = await limits.anvil.request(request, ident(s.settings.service, s.client))
    if reply is None or reply.rate <= limit:
        return None
    events.limit_exceeded(what, reply.rate, s.client.label, s.settings.service)
    return reply.rate


async def message(s: Session) -> Reply | None:
    """At MAIL: ``smtpd_client_message_rate_limit``."""
    limit = s.settings.limits.message_rate if s.settings.limits else 0
    if await _event(s, "message", limit, "Message delivery request rate") is None:
        return None
    return replies.too_much_mail(s.client.addr)


async def recipient(s: Session) -> Reply | None:
    """At RCPT: ``smtpd_client_recipient_rate_limit``."""
    limit = s.settings.limits.recipient_rate if s.settings.limits else 0
    if await _event(s, "recipient", limit, "Recipient address rate") is None:
        return None
    return replies.too_many_recipients_from(s.client.addr)


async def auth(s: Session) -> Reply | None:
    """At AUTH: ``smtpd_client_auth_rate_limit``."""
    limit = s.settings.limits.auth_rate if s.settings.limits else 0
    if await _event(s, "auth", limit, "AUTH command rate") is None:
        return None
    return replies.too_many_auth(s.client.addr)


async def new_tls(s: Session) -> Reply | None:
    """At STARTTLS, before the handshake: ``smtpd_client_new_tls_session_rate_limit``."""
    limits = s.settings.limits
    if limits is None or not limits.newtls_rate or not limits.applies(s.client):
        return None
    reply = await limits.anvil.request("newtls_report", ident(s.settings.service, s.client))
    if reply is None or reply.rate <= limits.newtls_rate:
        return None
    events.limit_exceeded("New TLS session rate", reply.rate, s.client.label, s.settings.service)
    return replies.too_many_new_tls(s.client.label)


async def tls_done(s: Session, resumed: bool) -> None:
    """After a handshake: count it when the session is new."""
    limits = s.settings.limits
    if limits is not None and limits.newtls_rate and not resumed and limits.applies(s.client):
        await limits.anvil.request("newtls", ident(s.settings.service, s.client))
