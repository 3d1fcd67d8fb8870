"""smtpd: the SMTP server (RFC 5321), Postfix's smtpd(8) in postpy.

Started by master for an ``inet`` service in master.cf (``127.0.0.1:2525 inet
n - n - - smtpd`` in the embedded default).  It reads from the network and
writes nothing to disk: every accepted message is streamed to cleanup over
``private/cleanup`` (:mod:`postpy.smtpd.handoff`), which writes the queue
file.  It runs as ``mail_owner`` (after the skeleton's privilege drop),
inside the queue directory, optionally chrooted there; the TLS key is
loaded before the drop.

Why asyncio: an SMTP session spends nearly all of its time waiting for
the client (or for cleanup's fsync).  One event loop holds hundreds of
such sessions in one process for the memory of their buffers, with no
locking between them, where threads would cost a stack each and a
process per client would cost a Python start-up each.  The work that does
block (a pwd or lmdb lookup at RCPT, statvfs at MAIL) takes microseconds;
DNS lookups and policy servers are asked asynchronously, with time limits.
master still runs several smtpd processes (``maxproc``) when one reports
itself busy, so a CPU-bound client cannot starve everyone.

Modules: :mod:`~postpy.smtpd.session` (command loop and small commands),
:mod:`~postpy.smtpd.envelope` (MAIL, RCPT), :mod:`~postpy.smtpd.transfer`
(DATA, BDAT), :mod:`~postpy.smtpd.data` (end-of-data detection,
dot-unstuffing, bare CR/LF), :mod:`~postpy.smtpd.commands` (parsing),
:mod:`~postpy.smtpd.relay` (mynetworks, relay control, local recipients),
:mod:`~postpy.smtpd.restrictions` (the ``smtpd_*_restrictions`` lists, with
:mod:`~postpy.smtpd.access`, :mod:`~postpy.smtpd.dnsbl`,
:mod:`~postpy.smtpd.policy`, :mod:`~postpy.smtpd.peername` for the client's
name and :mod:`~postpy.smtpd.dnsquery` under them),
:mod:`~postpy.smtpd.replies`, :mod:`~postpy.smtpd.events` (log lines),
:mod:`~postpy.smtpd.channel` (client I/O and STARTTLS),
:mod:`~postpy.smtpd.settings`, :mod:`~postpy.smtpd.tls`,
:mod:`~postpy.smtpd.auth` (AUTH; the SASL machinery is :mod:`postpy.sasl`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os

from postpy.sasl import ratelimit
from postpy.server import skeleton
from postpy.smtpd import limits, peername, pregreet, stress
from postpy.smtpd.channel import Channel
from postpy.smtpd.dnsquery import Lookups
from postpy.smtpd.relay import parse_ip
from postpy.smtpd.session import SHUTDOWN, Session
from postpy.smtpd.settings import Settings, SettingsError
from postpy.smtpd.state import Client
from postpy.util import maillog

SETTINGS_KEY = "smtpd"


def client_from(writer: asyncio.StreamWriter, settings: Settings) -> Client:
    """Who is connected, before the name lookup (:func:`name_client`):
    loopback is ``localhost``, anything else ``unknown``.  A unix-socket
    client is local."""
    peer = writer.get_extra_info("peername")
    sock = writer.get_extra_info("sockname")
    if not isinstance(peer, tuple) or len(peer) < 2:
        addr, port, server = "127.0.0.1", "", ""
    else:
        ip = parse_ip(str(peer[0]))
        addr = str(ip) if ip is not None else str(peer[0])
        port = str(peer[1])
        server_ip = parse_ip(str(sock[0])) if isinstance(sock, tuple) and sock else None
        server = str(server_ip) if server_ip is not None else ""
    ip = parse_ip(addr)
    name = "localhost" if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) \
        and ip.is_loopback else "unknown"
    server_port = str(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else ""
    return Client(name=name, addr=addr, port=port, server_addr=server, server_port=server_port,
                  trusted=settings.mynetworks.matches(addr))


async def name_client(client: Client, settings: Settings, dns: Lookups) -> None:
    """The client's verified and reverse names (:mod:`postpy.smtpd.peername`),
    once per connection, with ``smtpd_peername_lookup = yes``."""
    cfg = settings.rules().cfg
    if not cfg.peername_lookup:
        return
    client.peer = await peername.lookup(client.addr, dns, cfg.hosts)
    client.name = client.peer.name


async def serve_client(settings: Settings, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, service: str = "smtpd") -> None:
    """One SMTP session on an accepted connection: anvil's limits
    (:mod:`~postpy.smtpd.limits`), the pre-greeting test
    (:mod:`~postpy.smtpd.pregreet`), the stress limits
    (:mod:`~postpy.smtpd.stress`), then the session."""
    if settings.tls_wrappermode:
        # The client's TLS hello must stay in the socket until the handshake
        # (bytes the stream reader took meanwhile would be lost to it).
        transport = writer.transport
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
    settings.refresh_tls()
    client = client_from(writer, settings)
    rules = settings.rules().cfg
    dns = Lookups(rules.resolver, rules.dns_timeout)
    load = settings.load
    session_settings = stress.session_settings(settings, load.begin())
    registered = False
    try:
        await name_client(client, settings, dns)
        channel = Channel(reader, writer, session_settings.timeout)
        session = Session(session_settings, channel, client, dns)
        registered, refuse = await limits.connect(settings.limits, client, service, settings.hostname)
        if refuse is None and settings.pregreet_delay > 0 and not settings.tls_wrappermode:
            refuse = await pregreet.test(channel, client, settings.pregreet_delay,
                                         settings.pregreet_action)
        await session.run(refuse)
    finally:
        load.end()
        if registered:
            await limits.disconnect(settings.limits, client, service)


def load_settings(ctx: skeleton.ServerContext) -> None:
    """Before the privilege drop: read the configuration and the TLS key."""
    try:
        settings = Settings.from_config(ctx.cfg)
    except SettingsError as exc:
        maillog.fatal(str(exc))
    for text in settings.warnings:
        maillog.warning(text)
    if settings.sasl is not None:
        settings.sasl.limiter.store = failure_store(ctx)
    settings.service = ctx.service
    ctx.extra[SETTINGS_KEY] = settings


def failure_store(ctx: skeleton.ServerContext) -> ratelimit.FailureStore:
    """Where AUTH failures are counted: a directory shared by every smtpd
    process (made now, while we may still be root), else this process."""
    data = os.path.abspath(ctx.cfg.get_path("data_directory"))
    try:
        path = ratelimit.prepare_directory(data, ctx.identity.uid, ctx.identity.gid)
    except OSError as exc:
        maillog.warning(f"cannot use {data}/{ratelimit.SUBDIR}: {exc.strerror or exc}; "
                        "AUTH failures are counted per smtpd process")
        return ratelimit.MemoryStore()
    if os.path.commonpath([path, ctx.queue_directory]) == ctx.queue_directory:
        path = os.path.relpath(path, ctx.queue_directory)   # valid inside a chroot too
    return ratelimit.DirectoryStore(path)


async def handle(ctx: skeleton.ServerContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    await serve_client(ctx.extra[SETTINGS_KEY], reader, writer, ctx.service)


def main() -> None:
    ctx = skeleton.prepare("smtpd", before_jail=load_settings)
    ctx.on_terminate.append(SHUTDOWN.request)
    # A stop lets a message on its way to cleanup get its 250 (no duplicate
    # from a client that retries); idle sessions are closed at once.
    settings: Settings = ctx.extra[SETTINGS_KEY]
    skeleton.run_async_server(ctx, handle, drain_on_stop=True, busy_at=settings.load.threshold)
