"""This host's own addresses: the smtp client's mail-loop check, and which
address literals (``user@[ip]``) are local.

An MX host whose address is one this system receives mail on means the
mail would come straight back (Postfix's "mail for X loops back to
myself").  The addresses come from ``inet_interfaces``: explicit addresses
as written, ``loopback-only`` as 127.0.0.1 and ::1, and ``all`` as every
address on every interface (getifaddrs(3) through ctypes; the stdlib has no
wrapper).  Host names in ``inet_interfaces`` are resolved once, at start.

Computed before the chroot and privilege drop, then kept.

:func:`receiving_addresses` adds ``proxy_interfaces`` (addresses that reach
this host through a proxy or NAT) and remembers its answer for the life of
the process; it is the one definition of "an address of ours" that smtpd's
RCPT check and qmgr's routing (:mod:`postpy.qmgr.resolve`) share.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _SockAddr(ctypes.Structure):
    _fields_ = [("sa_family", ctypes.c_ushort), ("sa_data", ctypes.c_ubyte * 14)]


class _SockAddrIn6(ctypes.Structure):
    _fields_ = [("sin6_family", ctypes.c_ushort), ("sin6_port", ctypes.c_uint16),
                ("sin6_flowinfo", ctypes.c_uint32), ("sin6_addr", ctypes.c_ubyte * 16),
                ("sin6_scope_id", ctypes.c_uint32)]


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [("ifa_next", ctypes.POINTER(_IfAddrs)), ("ifa_name", ctypes.c_char_p),
                     ("ifa_flags", ctypes.c_uint), ("ifa_addr", ctypes.POINTER(_SockAddr)),
                     ("ifa_netmask", ctypes.POINTER(_SockAddr)), ("ifa_ifu", ctypes.c_void_p),
                     ("ifa_data", ctypes.c_void_p)]


def interface_addresses() -> set[IPAddress]:
    """Every IPv4 and IPv6 address configured on this host's interfaces."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    head = ctypes.POINTER(_IfAddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return set()
    found: set[IPAddress] = set()
    try:
        node = head
        while node:
            sa = node.contents.ifa_addr
            if sa:
                family = sa.contents.sa_family
                if family == socket.AF_INET:
                    found.add(ipaddress.IPv4Address(bytes(sa.contents.sa_data[2:6])))
                elif family == socket.AF_INET6:
                    sin6 = ctypes.cast(sa, ctypes.POINTER(_SockAddrIn6)).contents
                    found.add(ipaddress.IPv6Address(bytes(sin6.sin6_addr)))
            node = node.contents.ifa_next
    finally:
        libc.freeifaddrs(head)
    return found


def own_addresses(inet_interfaces: list[str]) -> set[IPAddress]:
    """The addresses named by ``inet_interfaces`` (see the module text)."""
    result: set[IPAddress] = set()
    for word in inet_interfaces:
        lowered = word.lower()
        if lowered == "all":
            result |= interface_addresses()
        elif lowered == "loopback-only":
            result |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        else:
            text = word[1:-1] if word.startswith("[") and word.endswith("]") else word
            try:
                result.add(ipaddress.ip_address(text))
            except ValueError:
                try:
                    infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
                except OSError:
                    continue
                result |= {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return result


@functools.lru_cache(maxsize=8)
def _receiving(words: tuple[str, ...]) -> frozenset[IPAddress]:
    return frozenset(own_addresses(list(words)))


def receiving_addresses(inet_interfaces: list[str], proxy_interfaces: list[str]) -> frozenset[IPAddress]:
    """Every address mail for this host arrives on (computed once per process)."""
    return _receiving(tuple(inet_interfaces) + tuple(proxy_interfaces))
