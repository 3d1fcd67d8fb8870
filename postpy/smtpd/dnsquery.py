"""smtpd's DNS lookups: one resolver per process, answers cached per session.

The restrictions that ask DNS (reverse client names, ``reject_unknown_*``,
blocklists) call :meth:`Lookups.query`, which never raises: the answer is
:class:`Answer` with a status, ``ok`` (records as text), ``nxdomain``,
``nodata`` or ``temp`` (SERVFAIL, REFUSED, a timeout, a malformed answer).
Every query is bounded by ``smtpd_dns_timeout`` and runs on dnspython's
asyncio resolver, so a slow name server delays only the session that asked.
A session asks each (name, type) once: DNSBL lookups repeated for every
recipient cost nothing.

The resolver is the system's (resolv.conf, read when smtpd starts, before
any chroot), or the server in ``dns_resolver_address`` (``addr``,
``addr:port`` or ``[addr]:port``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver

OK, NXDOMAIN, NODATA, TEMP = "ok", "nxdomain", "nodata", "temp"


@dataclass(frozen=True)
class Answer:
    status: str
    records: tuple[str, ...] = ()


@dataclass
class Lookups:
    """One session's DNS questions and their answers."""

    resolver: dns.asyncresolver.Resolver | None
    timeout: float = 10.0
    cache: dict[tuple[str, str], Answer] = field(default_factory=dict)

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype)
        cached = self.cache.get(key)
        if cached is None:
            cached = self.cache[key] = await self._ask(key[0], rdtype)
        return cached

    async def _ask(self, name: str, rdtype: str) -> Answer:
        if self.resolver is None or not name:
            return Answer(TEMP)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.resolver.resolve(name + ".", rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(NXDOMAIN)
        except dns.resolver.NoAnswer:
            return Answer(NODATA)
        except (dns.exception.DNSException, TimeoutError, OSError, ValueError):
            return Answer(TEMP)
        return Answer(OK, tuple(_text(r) for r in answer))


def _text(record: object) -> str:
    strings = getattr(record, "strings", None)
    if strings is not None:         # TXT: the strings joined, as Postfix does
        return "".join(s.decode("utf-8", "replace") for s in strings)
    return str(record)
