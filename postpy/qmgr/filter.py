"""qmgr: after-queue content filtering (Postfix's ``content_filter``).

A message received by a service with ``content_filter = transport:nexthop``
(in main.cf, or ``-o content_filter=...`` on that service in master.cf)
carries the value as the ``content_filter`` attribute of its queue file
(smtpd passes it to cleanup, which stores it).  qmgr then sends *every*
recipient of that message to that transport and next hop instead of the
recipient's own route (:mod:`postpy.qmgr.resolve` is not asked).  The
filter hands the message back (``sendmail``, or an SMTP server with
``-o content_filter=``); the new message has no attribute, so it is
routed normally and never filtered twice.

An empty next hop means the recipient's domain, as for ``transport_maps``.
"""

from __future__ import annotations

from collections.abc import Mapping

from postpy.qmgr.resolve import Route, domain_of

ATTRIBUTE = "content_filter"


def filter_route(attrs: Mapping[str, str], address: str) -> Route | None:
    """The route the message's content filter imposes on ``address``, or None."""
    value = attrs.get(ATTRIBUTE, "").strip()
    if not value:
        return None
    transport, _, nexthop = value.partition(":")
    transport, nexthop = transport.strip(), nexthop.strip()
    if not transport:
        return Route("retry", "", f"4.3.5 bad content_filter value: {value}", retry=True)
    return Route(transport, nexthop or domain_of(address))
