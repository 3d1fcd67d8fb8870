"""The facts built-in restrictions test: host name syntax, domains in DNS.

Pure questions with no reply wording (that is :mod:`postpy.smtpd.restrictions`):

- :func:`invalid_helo`: ``reject_invalid_helo_hostname`` -- a HELO name
  that is neither a host name (LDH labels; ``_`` tolerated as Postfix
  does) nor an address (``1.2.3.4``, ``[1.2.3.4]``, ``[IPv6:...]``);
- :func:`non_fqdn_helo`: ``reject_non_fqdn_helo_hostname`` -- a host name
  without a dot (address literals are fully qualified);
- :func:`non_fqdn_address`: ``reject_non_fqdn_sender``/``_recipient`` --
  no domain, or a domain without a dot (the null sender is exempt);
- :func:`domain_status`: ``reject_unknown_sender_domain`` /
  ``_recipient_domain`` -- ``ok`` when the domain has an MX record, or
  else an A or AAAA record; ``nullmx`` for a null MX (RFC 7505);
  ``unknown`` for NXDOMAIN or no such records; ``temp`` when DNS did not
  answer.  Address literals are always ``ok``.
"""

from __future__ import annotations

import ipaddress
import re

from postpy.mail.address import domain_literal_address, split_address
from postpy.smtpd.dnsquery import NODATA, NXDOMAIN, OK, Lookups

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_address(name: str) -> bool:
    if name.startswith("["):
        return domain_literal_address(name) is not None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def invalid_helo(helo: str) -> bool:
    if _is_address(helo):
        return False
    name = helo[:-1] if helo.endswith(".") else helo
    return not name or len(name) > 255 or not all(_LABEL.fullmatch(p) for p in name.split("."))


def non_fqdn_helo(helo: str) -> bool:
    if _is_address(helo):
        return False
    return "." not in helo.strip(".")


def non_fqdn_address(address: str) -> bool:
    if not address:
        return False
    domain = split_address(address)[1]
    if domain.startswith("["):
        return False
    return "." not in domain.strip(".")


async def domain_status(dns: Lookups, domain: str) -> str:
    if not domain or domain.startswith("["):
        return OK
    mx = await dns.query(domain, "MX")
    if mx.status == OK:
        if len(mx.records) == 1 and mx.records[0].split()[-1] == ".":
            return "nullmx"
        return OK
    if mx.status == NXDOMAIN:
        return "unknown"
    if mx.status != NODATA:
        return "temp"
    statuses = [(await dns.query(domain, rdtype)).status for rdtype in ("A", "AAAA")]
    if OK in statuses:
        return OK
    return "temp" if any(s not in (NXDOMAIN, NODATA) for s in statuses) else "unknown"
