"""Where the lmtp client connects: an LMTP next hop -> server addresses.

The ``lmtp`` program is the smtp delivery agent in LMTP mode (RFC 2033;
see :mod:`postpy.smtp.client` for LHLO and the per-recipient replies).
Its next hops, as written after ``lmtp:`` in a transport (Postfix's
lmtp(8) syntax):

- ``unix:/path/to/socket``, or ``unix:private/dovecot-lmtp``: a unix-domain
  socket; a relative path is relative to ``queue_directory`` (the agent's
  working directory, also inside a chroot).  Logged as
  ``relay=private/dovecot-lmtp[private/dovecot-lmtp]``.
- ``inet:host``, ``inet:host:port``, ``inet:[addr]:port``, and the same
  without ``inet:``: a TCP server, port ``lmtp_tcp_port`` (24) when none is
  given.  A host name is looked up for its addresses only: LMTP never uses
  MX records.

Several next hops may be listed, separated by commas or spaces; they are
tried in order, like the servers of an SMTP next hop.
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.smtp.dns import DestinationResolver, Target
from postpy.smtp.failure import DeliveryFailure, temporary


def _bad(word: str) -> DeliveryFailure:
    return temporary(f"mail system configuration error: malformed LMTP next hop {word!r}", "4.3.5",
                     next_host=False)


def split_nexthop(text: str) -> list[tuple[str, str]]:
    """``[("unix", path) | ("inet", "[host]:port" or "[host]")]`` in the order written."""
    hops: list[tuple[str, str]] = []
    for word in text.replace(",", " ").split():
        kind, sep, rest = word.partition(":")
        if sep and kind.lower() == "unix":
            if not rest:
                raise _bad(word)
            hops.append(("unix", rest))
            continue
        if sep and kind.lower() == "inet":
            word = rest
        if not word or word.startswith(":"):
            raise _bad(word)
        if word.startswith("["):
            hops.append(("inet", word))          # already no MX: [host] or [host]:port
        elif word.count(":") == 1:
            host, _, port = word.partition(":")
            hops.append(("inet", f"[{host}]:{port}"))
        elif ":" in word:
            raise _bad(word)                     # a bare IPv6 address needs [brackets]
        else:
            hops.append(("inet", f"[{word}]"))
    if not hops:
        raise temporary("mail system configuration error: empty LMTP next hop", "4.3.5",
                        next_host=False)
    return hops


@dataclass
class LmtpDestinations:
    """The LMTP counterpart of :class:`DestinationResolver` (same ``targets`` call)."""

    hosts: DestinationResolver         # addresses of inet next hops (never MX)

    async def targets(self, nexthop: str, default_port: int) -> list[Target]:
        result: list[Target] = []
        failure: DeliveryFailure | None = None
        for kind, where in split_nexthop(nexthop):
            if kind == "unix":
                result.append(Target(where, where, 0, unix=True))
                continue
            try:
                result += await self.hosts.targets(where, default_port)
            except DeliveryFailure as exc:
                failure = failure if failure and not failure.permanent else exc
        if not result:
            assert failure is not None
            raise failure
        return result
