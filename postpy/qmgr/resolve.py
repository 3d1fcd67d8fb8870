"""Where a recipient goes: its transport and next hop (qmgr's routing).

Rules, first match wins:

1. ``transport_maps``: keys tried are the full address, ``user@domain``
   without its extension, the domain, each parent domain as ``.parent``,
   and ``*``.  A value is ``transport:nexthop``; an empty transport means
   the one rule 2-4 would choose, an empty nexthop the recipient's domain.
   ``error:text`` bounces with text (``X.Y.Z text`` sets the status),
   ``retry:text`` defers.
2. A local domain goes to ``local_transport`` (``local``), next hop the
   domain.  Local means (:func:`is_local_destination`, the one definition
   smtpd's RCPT check uses too): no domain at all, a domain in
   ``mydestination``, or an address literal ``[ip]`` naming one of this
   host's addresses (``inet_interfaces`` and ``proxy_interfaces``, see
   :func:`postpy.smtp.localaddrs.receiving_addresses`).  Another address
   literal is not local: it goes to ``smtp:[ip]``.
3. With ``relayhost`` set, other mail goes to ``default_transport`` with
   the relayhost as next hop.
4. Otherwise ``default_transport`` (``smtp``) with the domain as next hop.

sendmail -bv uses the same function, so "how would this be delivered"
never disagrees with what qmgr does.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from postpy.config.maincf import Config
from postpy.mail.address import domain_literal_address
from postpy.smtp.localaddrs import IPAddress, receiving_addresses

_DSN = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}\s+")


@dataclass(frozen=True)
class Route:
    transport: str
    nexthop: str
    error: str = ""          # non-empty: do not deliver; "X.Y.Z text"
    retry: bool = False      # error is temporary

    def describe(self) -> str:
        if self.error:
            return f"{'deferred' if self.retry else 'undeliverable'}: {self.error}"
        return f"deliverable via {self.transport}" + (f" to {self.nexthop}" if self.nexthop else "")


def _split(value: str) -> tuple[str, str]:
    transport, _, nexthop = value.partition(":")
    return transport.strip(), nexthop.strip()


def _error_text(text: str, default: str) -> str:
    text = text.strip() or "delivery not allowed"
    return text if _DSN.match(text) else f"{default} {text}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def is_local_destination(domain: str, mydestination: Collection[str],
                         own_addresses: Collection[IPAddress]) -> bool:
    """Is mail for ``domain`` delivered on this host?  ``mydestination``
    holds lower-case names without a trailing dot; ``own_addresses`` is
    :func:`postpy.smtp.localaddrs.receiving_addresses`."""
    if not domain:
        return True
    if domain.startswith("["):
        literal = domain_literal_address(domain)
        return literal is not None and literal in own_addresses
    return domain.lower().rstrip(".") in mydestination


def local_destinations(cfg: Config) -> frozenset[str]:
    """``mydestination`` as :func:`is_local_destination` wants it."""
    return frozenset(d.lower().rstrip(".") for d in cfg.get_list("mydestination"))


def own_addresses(cfg: Config) -> frozenset[IPAddress]:
    """This host's addresses for ``user@[ip]``."""
    return receiving_addresses(cfg.get_list("inet_interfaces"), cfg.get_list("proxy_interfaces"))


def is_local_domain(cfg: Config, domain: str) -> bool:
    return is_local_destination(domain, local_destinations(cfg), own_addresses(cfg))


def _transport_keys(cfg: Config, address: str) -> list[str]:
    local, _, domain = address.rpartition("@")
    keys = [address]
    delimiter = cfg.get("recipient_delimiter")
    if delimiter and local:
        for ch in delimiter:
            if ch in local:
                keys.append(f"{local.split(ch, 1)[0]}@{domain}")
                break
    if domain:
        keys.append(domain)
        labels = domain.split(".")
        keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    keys.append("*")
    return keys


def _table_lookup(cfg: Config, address: str) -> str | None:
    specs = cfg.get_list("transport_maps")
    if not specs:
        return None
    from postpy.tables.maps import lookup_in_maps

    for key in _transport_keys(cfg, address.lower()):
        value = lookup_in_maps(specs, key)
        if value is not None:
            return value
    return None


def resolve(cfg: Config, address: str) -> Route:
    domain = domain_of(address)
    local = is_local_domain(cfg, domain)
    local_transport, local_hop = _split(cfg.get("local_transport"))
    default_transport, default_hop = _split(cfg.get("default_transport"))
    relayhost = cfg.get("relayhost").strip()
    if local:
        chosen = Route(local_transport or "local", domain or local_hop)
    else:
        chosen = Route(default_transport or "smtp", default_hop or relayhost or domain)
    from postpy.tables.maps import TableError

    try:
        entry = _table_lookup(cfg, address)
    except TableError as exc:
        return Route("retry", "", f"4.3.0 transport table lookup failure: {exc}", retry=True)
    if entry is None:
        return chosen
    transport, nexthop = _split(entry)
    if transport == "error":
        return Route("error", "", _error_text(nexthop, "5.0.0"))
    if transport == "retry":
        return Route("retry", "", _error_text(nexthop, "4.0.0"), retry=True)
    return Route(transport or chosen.transport, nexthop or (domain if transport else chosen.nexthop))
