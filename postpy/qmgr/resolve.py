"""Where a recipient goes: its transport and next hop (qmgr's routing).

First the recipient's domain class gives a route:

- **local**: a domain in ``mydestination``, no domain at all, or an
  address literal ``[ip]`` naming one of this host's addresses
  (``inet_interfaces`` and ``proxy_interfaces``, see
  :func:`postpy.smtp.localaddrs.receiving_addresses`).  The one definition
  (:func:`is_local_destination`) is also smtpd's.  Route:
  ``local_transport`` (``local:$myhostname``); its next hop, or the
  recipient's domain when it names none.  Another address literal is not
  local: it goes to ``smtp:[ip]``.
- **virtual alias**: a domain in ``virtual_alias_domains`` (default
  ``$virtual_alias_maps``: a domain that is a key of its own in the table,
  ``v.example  anything``; :mod:`postpy.tables.domain_list`) and not local.
  cleanup rewrote every address of it that has a mapping
  (:mod:`postpy.cleanup.virtual_alias`), so a recipient still there is
  unknown: ``error``, ``5.1.1 User unknown in virtual alias table``, and
  neither ``transport_maps`` nor anything below changes that (as Postfix).
- **virtual mailbox**: a domain in ``virtual_mailbox_domains`` (names,
  ``.subdomains``, tables or files, :mod:`postpy.tables.domain_list`; the default
  is ``$virtual_mailbox_maps``).  Route: ``virtual_transport``
  (``virtual``), e.g. ``lmtp:unix:private/dovecot-lmtp``; an empty next hop
  means the domain.  postpy has no virtual(8) agent: with the default and
  no ``virtual`` service in master.cf, qmgr defers such mail and says why
  (:mod:`postpy.qmgr.services`).  Unknown users of these domains are
  refused at RCPT (``virtual_mailbox_maps``, :mod:`postpy.smtpd.recipients`).
- **default** (relay domains included): ``default_transport`` (``smtp``),
  next hop its own, else ``relayhost``, else the domain.  When the sender
  is known (qmgr; not ``sendmail -bv``), ``sender_dependent_default_transport_maps``
  overrides ``default_transport`` and ``sender_dependent_relayhost_maps``
  overrides ``relayhost``: keys the sender address, then ``@domain`` (the
  null sender: ``empty_address_*_lookup_key``, ``<>``); ``DUNNO`` keeps the
  global setting.  A next hop in the transport still wins over any relayhost.

Then ``transport_maps`` may override it: keys tried are the full address,
``user@domain`` without its extension, the domain, each parent domain as
``.parent``, and ``*``.  A value is ``transport:nexthop``; an empty
transport means the one of the domain class, an empty nexthop the
recipient's domain.  ``error:text`` bounces with text (``X.Y.Z text`` sets
the status), ``retry:text`` defers.

Last, ``relocated_maps`` (:mod:`postpy.mail.relocated`) overrides all of
that, as in Postfix: a moved recipient bounces with ``5.1.6 User has moved
to NEWADDR``.  A table that cannot be read defers the recipient (4.3.0,
naming the table's parameter).

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


def is_virtual_mailbox_domain(cfg: Config, domain: str) -> bool:
    """Is ``domain`` in ``virtual_mailbox_domains``?  Raises TableError."""
    from postpy.tables.domain_list import DomainList

    return DomainList.parse(cfg.get_list("virtual_mailbox_domains")).matches(domain)


VIRTUAL_ALIAS_UNKNOWN = "5.1.1 User unknown in virtual alias table"


def virtual_alias_route(cfg: Config, domain: str, local: bool) -> Route | None:
    """The error route of a recipient in a virtual alias domain, or None
    (see the module text); a table that fails defers it."""
    if local or not domain:
        return None
    from postpy.tables.domain_list import DomainList
    from postpy.tables.maps import TableError

    try:
        alias = DomainList.parse(cfg.get_list("virtual_alias_domains")).matches(domain)
    except TableError as exc:
        return _lookup_failure("virtual_alias_domains", exc)
    return Route("error", "", VIRTUAL_ALIAS_UNKNOWN) if alias else None


def _class_route(cfg: Config, domain: str, local: bool, sender: str | None = None) -> Route:
    """The route of the domain's class, before transport_maps.  Raises TableError."""
    if local:
        transport, hop = _split(cfg.get("local_transport"))
        return Route(transport or "local", hop or domain)
    if is_virtual_mailbox_domain(cfg, domain):
        transport, hop = _split(cfg.get("virtual_transport"))
        return Route(transport or "virtual", hop or domain)
    return _default_route(cfg, domain, sender)


def _sender_lookup(cfg: Config, param: str, null_key: str, sender: str | None) -> str | None:
    """A sender_dependent_* table's value for ``sender`` (None: no entry, DUNNO or no sender).
    Raises TableError."""
    specs = cfg.get_list(param)
    if sender is None or not specs:
        return None
    from postpy.tables.maps import lookup_in_maps

    if not sender:
        keys = [cfg.get(null_key)]
    else:
        keys = [sender.lower()] + ([f"@{domain_of(sender)}"] if "@" in sender else [])
    for key in keys:
        value = lookup_in_maps(specs, key)
        if value is not None:
            value = value.strip()
            return None if value.upper() == "DUNNO" or not value else value
    return None


def _default_route(cfg: Config, domain: str, sender: str | None) -> Route:
    """default_transport and relayhost, each with its sender-dependent override."""
    from postpy.tables.maps import TableError

    try:
        transport_value = _sender_lookup(cfg, "sender_dependent_default_transport_maps",
                                         "empty_address_default_transport_maps_lookup_key", sender)
    except TableError as exc:
        return _lookup_failure("sender_dependent_default_transport_maps", exc)
    try:
        relayhost = _sender_lookup(cfg, "sender_dependent_relayhost_maps",
                                   "empty_address_relayhost_maps_lookup_key", sender)
    except TableError as exc:
        return _lookup_failure("sender_dependent_relayhost_maps", exc)
    transport, hop = _split(transport_value or cfg.get("default_transport"))
    return Route(transport or "smtp", hop or relayhost or cfg.get("relayhost").strip() or domain)


def _table_route(entry: str, domain: str, chosen: Route) -> Route:
    """The route a transport_maps value gives."""
    transport, nexthop = _split(entry)
    if transport == "error":
        return Route("error", "", _error_text(nexthop, "5.0.0"))
    if transport == "retry":
        return Route("retry", "", _error_text(nexthop, "4.0.0"), retry=True)
    return Route(transport or chosen.transport, nexthop or (domain if transport else chosen.nexthop))


def _lookup_failure(what: str, exc: Exception) -> Route:
    return Route("retry", "", f"4.3.0 {what} lookup failure: {exc}", retry=True)


def resolve(cfg: Config, address: str, sender: str | None = None) -> Route:
    """``sender``: the envelope sender, for the sender-dependent tables (None: unknown)."""
    from postpy.mail import relocated
    from postpy.tables.maps import TableError

    domain = domain_of(address)
    local = is_local_domain(cfg, domain)
    alias = virtual_alias_route(cfg, domain, local)
    if alias is not None:
        return alias
    try:
        chosen = _class_route(cfg, domain, local, sender)
    except TableError as exc:
        return _lookup_failure("virtual_mailbox_domains", exc)
    try:
        entry = _table_lookup(cfg, address)
    except TableError as exc:
        return _lookup_failure("transport table", exc)
    route = chosen if entry is None else _table_route(entry, domain, chosen)
    try:
        moved = relocated.new_location(cfg, address)
    except TableError as exc:
        return _lookup_failure("relocated_maps", exc)
    if moved is not None:
        return Route("error", "", f"{relocated.DSN} {relocated.moved_text(moved)}")
    return route
