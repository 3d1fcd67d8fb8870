"""Modules a daemon loads on first use, imported while it may still read them.

A daemon drops to mail_owner before it serves; anything it imports after
that must be readable by mail_owner.  When the interpreter's library is
not (a Python built under root's home), an import that happens late fails
late: at the first AUTH, the first remote delivery.  So every module a
daemon would otherwise load lazily (the standard library's, third-party
libraries', postpy's own) is listed here and imported by the skeleton
before the privilege drop (:func:`preload`), and ``postpy check`` imports
the same lists as mail_owner (:mod:`postpy.cli.selfcheck`).
"""

from __future__ import annotations

import importlib

# Loaded lazily by asyncio.to_thread / run_in_executor, host name encoding,
# and a crash's traceback.
COMMON = ("concurrent.futures.thread", "encodings.idna", "traceback")

# Opening an lmdb table, and the tables behind every map lookup.
TABLES = ("lmdb", "lmdb._envid", "postpy.tables.maps")

# Routing (qmgr/resolve.py) loads these on the first recipient it routes.
ROUTING = ("postpy.mail.relocated", "postpy.tables.addrfind", "postpy.tables.domain_list")

_SMTP = (*TABLES, "ssl", "dns._asyncio_backend", "dns.rdtypes.mxbase", "dns.rdtypes.ANY.MX",
         "dns.rdtypes.ANY.CNAME", "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "sniffio")

BY_PROGRAM: dict[str, tuple[str, ...]] = {
    "smtpd": (*TABLES, "ssl", "postpy.sasl.passwdfile", "postpy.sasl.dovecot",
              # restrictions: client names, domains and DNS lists (postpy.smtpd.dnsquery)
              "dns._asyncio_backend", "dns.rdtypes.mxbase", "dns.rdtypes.txtbase",
              "dns.rdtypes.ANY.MX", "dns.rdtypes.ANY.PTR", "dns.rdtypes.ANY.TXT",
              "dns.rdtypes.ANY.CNAME", "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "sniffio"),
    "smtp": _SMTP,
    "lmtp": _SMTP,
    "qmgr": (*TABLES, *ROUTING, "postpy.mail.authorized"),
    "pickup": (*TABLES, "postpy.mail.authorized"),
    "cleanup": TABLES,
    "local": TABLES,
    "bounce": (),
    "showq": (),
    "anvil": (),
}

# Used when installed, harmless when not (a library tries it and goes on).
OPTIONAL = frozenset({"sniffio"})


def modules_for(program: str) -> tuple[str, ...]:
    """The modules ``program`` loads on first use (its service module aside)."""
    return (*COMMON, *BY_PROGRAM.get(program, ()))


def preload(program: str) -> None:
    """Import now what ``program`` would load later."""
    for name in modules_for(program):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            if name not in OPTIONAL:
                raise
