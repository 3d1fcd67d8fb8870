"""The dnspython resolver the daemons that ask DNS use (smtp's MX lookups,
smtpd's restrictions): the system's (resolv.conf, read at start, before any
chroot), or the one server ``dns_resolver_address`` names (``addr``,
``addr:port`` or ``[addr]:port``), every query bounded by ``timeout``."""

from __future__ import annotations

import dns.asyncresolver
import dns.resolver


def make_resolver(server: str = "", timeout: float = 10.0) -> dns.asyncresolver.Resolver:
    """dnspython resolver: the system's, or one that asks ``server`` (addr[:port])."""
    if server:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, port = server, 53
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif server.count(":") == 1:
            host, _, text = server.partition(":")
            port = int(text)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    resolver.lifetime = timeout
    resolver.timeout = min(resolver.timeout, timeout)
    resolver.cache = dns.resolver.LRUCache(1000)
    return resolver
