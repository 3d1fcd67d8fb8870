"""sendmail -bv: what would happen to one address, as far as it can be told here.

:func:`postpy.qmgr.resolve.resolve` gives the route (qmgr's own answer,
relocated users included).  Then, in the order mail would meet them:

- a transport that is no master.cf service: ``deferred: 4.3.0 mail
  transport unavailable: no "virtual" service in master.cf (...)``, as
  qmgr would log (:mod:`postpy.qmgr.services`);
- local mail: an unknown user is ``5.1.1 User unknown in local recipient
  table`` unless ``mailbox_transport`` (everyone) or ``fallback_transport``
  (users without passwd entry) takes it; the line then names that
  transport, checked against master.cf too;
- other domains: an unknown recipient of a virtual mailbox or relay domain
  (:meth:`postpy.smtpd.recipients.RecipientTables.unknown`, the tables smtpd
  checks at RCPT) is ``5.1.1 User unknown in virtual mailbox table`` (or
  relay recipient table).

A table that cannot be read here is given the benefit of the doubt.
"""

from __future__ import annotations

from collections.abc import Callable

from postpy.config.maincf import Config, ConfigError
from postpy.qmgr import services
from postpy.qmgr.resolve import Route, domain_of, is_local_domain


def _services(cfg: Config) -> frozenset[str] | None:
    """Service names of master.cf (None: it cannot be read, so nothing is checked)."""
    from postpy.config.mastercf import load_master_cf

    try:
        return frozenset(s.name for s in load_master_cf(cfg.config_dir).services)
    except (ConfigError, OSError):
        return None


def _unavailable(cfg: Config, transport: str, names: frozenset[str] | None) -> str | None:
    reason = None if names is None else services.unavailable_reason(cfg, transport, names)
    return None if reason is None else f"deferred: {services.DSN} {services.TEXT}: {reason}"


def verdict(cfg: Config, address: str, route: Route,
            local_known: Callable[[], bool]) -> tuple[str, bool]:
    """The text after ``address... `` and whether the address is deliverable."""
    if route.error:
        return route.describe(), False
    names = _services(cfg)
    problem = _unavailable(cfg, route.transport, names)
    if problem:
        return problem, False
    if route.transport == "local":
        return _local(cfg, route, local_known(), names)
    from postpy.smtpd.recipients import RecipientTables
    from postpy.smtpd.relay import in_relay_domains
    from postpy.tables.maps import TableError

    domain = domain_of(address)
    relay = in_relay_domains([d.lower() for d in cfg.get_list("relay_domains")], domain)
    try:
        table = RecipientTables.from_config(cfg).unknown(
            address, domain, local=is_local_domain(cfg, domain), relay_domain=relay)
    except TableError:
        table = None
    if table:
        return f"undeliverable: 5.1.1 User unknown in {table}", False
    return route.describe(), True


def _local(cfg: Config, route: Route, known: bool, names: frozenset[str] | None) -> tuple[str, bool]:
    mailbox = cfg.get("mailbox_transport").strip()
    fallback = "" if known else cfg.get("fallback_transport").strip()
    spec = mailbox or fallback
    if not spec:
        if known:
            return route.describe(), True
        return "undeliverable: 5.1.1 User unknown in local recipient table", False
    problem = _unavailable(cfg, spec.partition(":")[0].strip(), names)
    if problem:
        return problem, False
    which = "mailbox_transport" if mailbox else "fallback_transport"
    return f"{route.describe()}, then via {spec} ({which})", True
