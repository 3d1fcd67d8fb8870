"""qmgr: a route's transport must be a service in master.cf.

A transport is the name of a master.cf service (``private/<name>``).  When a
route names one master.cf lacks -- typically ``virtual_transport = virtual``
(Postfix's default; postpy has no virtual(8) agent) or a typo in
``transport_maps`` -- qmgr does not try to connect: it defers the recipient
with ``4.3.0 mail transport unavailable`` (Postfix's text) and logs a
warning that names the transport and the parameters that chose it, so the
mail waits in the queue until master.cf or main.cf is fixed and is never
lost.  ``sendmail -bv`` reports the same (:func:`unavailable_reason`).
"""

from __future__ import annotations

from collections.abc import Collection

from postpy.config.maincf import Config

DSN = "4.3.0"
TEXT = "mail transport unavailable"
# Parameters whose value is transport[:nexthop], for the warning's "named by".
_NAMING = ("local_transport", "virtual_transport", "default_transport", "content_filter",
           "mailbox_transport", "fallback_transport")


def unavailable_reason(cfg: Config, transport: str, services: Collection[str]) -> str | None:
    """Why ``transport`` cannot be used (no such master.cf service), or None."""
    if transport in services:
        return None
    named = [f"{name} = {cfg.get(name).strip()}" for name in _NAMING
             if cfg.get(name).partition(":")[0].strip() == transport]
    by = ", ".join(named) if named else "transport_maps"
    return f'no "{transport}" service in master.cf (named by {by})'
