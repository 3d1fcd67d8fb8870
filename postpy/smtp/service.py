"""smtp(8): the delivery agent for other hosts; ``libexec/smtp`` runs :func:`main`.

master starts it for the ``smtp`` service (``private/smtp``).  It runs as
``mail_owner`` (chroot-capable) inside the multi_server skeleton: one
asyncio process serves many qmgr connections, and each connection carries
a sequence of requests (:class:`postpy.ipc.messages.DeliveryRequest` in,
:class:`postpy.ipc.messages.DeliveryResult` out), so many outbound SMTP
sessions run at once in one process.

Before the chroot and privilege drop it reads what it cannot read later:
resolv.conf (the DNS resolver), the TLS CA file and client certificate,
this host's own addresses for the mail loop check, the port of the
``smtp`` service, and it opens ``smtp_sasl_password_maps`` and
``smtp_tls_policy_maps`` (a password table is usually readable by root
only, as in Postfix).

See :mod:`postpy.smtp.delivery` for what one request does.

lmtp(8) is this same program in LMTP mode: ``libexec/lmtp`` calls
``main("lmtp")`` (master.cf ``lmtp unix - - n - - lmtp``), which reads the
``lmtp_*`` parameters and takes next hops as :mod:`postpy.smtp.lmtp` says.
"""

from __future__ import annotations

import asyncio
import random

from postpy.config.maincf import ConfigError
from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRequest
from postpy.server import skeleton
from postpy.smtp.delivery import Agent, Destinations
from postpy.smtp.dns import DestinationResolver, families_for, make_resolver
from postpy.smtp.failure import DeliveryFailure
from postpy.smtp.lmtp import LmtpDestinations
from postpy.smtp.localaddrs import own_addresses
from postpy.smtp.settings import load_settings, param_name
from postpy.smtp.tls import TlsConfigError
from postpy.util import maillog

PEER = "qmgr"


def build_agent(ctx: skeleton.ServerContext) -> Agent:
    """Everything read from outside the queue directory, done once."""
    cfg = ctx.cfg
    protocol = ctx.program           # "smtp" or "lmtp"
    try:
        settings = load_settings(cfg, protocol)
        resolver = make_resolver(cfg.get("dns_resolver_address").strip(),
                                 cfg.get_time(param_name("smtp_dns_timeout", protocol)))
        hosts = DestinationResolver(
            resolver=resolver, myhostname=cfg.get("myhostname"),
            own_addresses=own_addresses(cfg.get_list("inet_interfaces")),
            families=families_for(cfg.get_list("inet_protocols")),
            lookup=tuple(w.lower() for w in cfg.get_list(param_name("smtp_host_lookup", protocol)))
            or ("dns",), rng=random.Random())
        destinations: Destinations = LmtpDestinations(hosts) if protocol == "lmtp" else hosts
        _open_tables(settings.client.sasl.password_maps if settings.client.sasl else [])
        _open_tables(settings.tls_policies.maps if settings.tls_policies else [])
    except (ConfigError, TlsConfigError, DeliveryFailure, ValueError) as exc:
        maillog.fatal(f"{protocol}: {exc}")
    return Agent(settings, destinations)


def _open_tables(specs: list[str]) -> None:
    """Open tables while still privileged; a failure is logged and retried when used."""
    from postpy.tables.maps import TableError, open_table

    for spec in specs:
        try:
            open_table(spec)
        except TableError:
            pass


async def handle(ctx: skeleton.ServerContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """One qmgr connection: answer requests until qmgr closes it."""
    agent: Agent = ctx.extra["agent"]
    max_frame = ctx.cfg.get_size("ipc_max_frame")
    while True:
        try:
            msg = await codec.async_recv(reader, PEER, max_frame)
        except EOFError:
            return
        request = codec.expect(msg, DeliveryRequest, PEER)
        result = await agent.deliver(request)
        await codec.async_send(writer, result)


def main(program: str = "smtp") -> None:
    def before_jail(ctx: skeleton.ServerContext) -> None:
        ctx.extra["agent"] = build_agent(ctx)

    ctx = skeleton.prepare(program, before_jail=before_jail)
    # A stop lets a delivery in flight finish and reach qmgr (no duplicate).
    skeleton.run_async_server(ctx, handle, drain_on_stop=True)
