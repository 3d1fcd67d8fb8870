"""master.cf: the services that master runs.

Each logical line (continuations as in main.cf) has eight fields::

    service  type  private  unpriv  chroot  wakeup  maxproc  command + args

- ``type`` is ``inet`` (service is ``[host:]port``), ``unix`` (a stream
  socket under ``private/`` or ``public/``) or ``fifo`` (accepted as a
  synonym of ``unix``: wake-ups are one-byte writes to a unix socket).
- ``private``, ``unpriv``, ``chroot`` are ``y``, ``n`` or ``-`` (default:
  y, y, n; an inet service is never private).
- ``wakeup`` is seconds between wake-up triggers that master sends (``0`` or
  ``-``: none); a trailing ``?`` means "only once the service runs", which
  postpy treats the same.  A service with a wakeup is kept running.
- ``maxproc`` is the process limit (``-``: ``$default_process_limit``; 0
  means no limit, capped at 1000).
- ``command`` names a program in ``daemon_directory`` (postpy's libexec);
  ``-o name=value`` arguments override main.cf for that service only.

Any malformed line (a NUL, bytes that are not UTF-8, a number with more
digits than any limit needs) raises :class:`ConfigError` naming the file
and line, never another exception.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

from postpy.config.maincf import ConfigError, logical_lines

SERVICE_TYPES = ("inet", "unix", "fifo")
MAX_DIGITS = 9              # wakeup and maxproc: up to 999999999
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]+")


def _bad_port(name: str) -> str:
    return f"service {name}: port must be a number from 1 to 65535 or a service name"


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    maxproc: int | None          # None: use default_process_limit
    command: str
    args: tuple[str, ...] = ()
    overrides: tuple[tuple[str, str], ...] = ()
    line: int = 0

    @property
    def key(self) -> str:
        """Identity across reloads: ``name/type``."""
        return f"{self.name}/{self.type}"

    def inet_address(self) -> tuple[str, int]:
        """(host, port) for an inet service; host '' means all addresses."""
        host, sep, port = self.name.rpartition(":")
        host = host.strip("[]") if sep else ""
        if port.isascii() and port.isdigit():
            number = int(port) if len(port) <= 5 else 0
        else:
            try:                       # Postfix's own master.cf says "smtp inet ..."
                number = socket.getservbyname(port, "tcp")
            except (OSError, ValueError, UnicodeError):
                number = 0
        if not 0 < number < 65536:
            raise ConfigError(f"master.cf, line {self.line}: {_bad_port(self.name)}")
        return host, number

    def socket_path(self, queue_directory: str) -> str:
        """Path of a unix service's socket."""
        sub = "private" if self.private else "public"
        return os.path.join(queue_directory, sub, self.name)


@dataclass
class MasterConfig:
    path: str
    services: list[Service] = field(default_factory=list)

    def by_key(self) -> dict[str, Service]:
        return {s.key: s for s in self.services}


def _flag(value: str, default: bool, what: str, where: str) -> bool:
    if value == "-":
        return default
    if value in ("y", "yes"):
        return True
    if value in ("n", "no"):
        return False
    raise ConfigError(f"{where}: bad {what} field \"{value}\" (expected y, n or -)")


def parse_master_cf(text: str, path: str = "master.cf") -> MasterConfig:
    result = MasterConfig(path)
    seen: set[str] = set()
    for number, line in logical_lines(text, path):
        where = f"{path}, line {number}"
        fields = line.split()
        if len(fields) < 8:
            raise ConfigError(f"{where}: expected 8 or more fields, found {len(fields)}: \"{line[:60]}\"")
        name, kind, private, unpriv, chroot, wakeup, maxproc, command = fields[:8]
        args = fields[8:]
        if kind not in SERVICE_TYPES:
            raise ConfigError(f"{where}: unknown service type \"{kind}\"")
        wake = wakeup.rstrip("?")
        if wake == "-":
            wake = "0"
        if not (wake.isascii() and wake.isdigit() and len(wake) <= MAX_DIGITS):
            raise ConfigError(f"{where}: bad wakeup field \"{wakeup}\"")
        if maxproc == "-":
            limit: int | None = None
        elif maxproc.isascii() and maxproc.isdigit() and len(maxproc) <= MAX_DIGITS:
            limit = int(maxproc) or 1000
        else:
            raise ConfigError(f"{where}: bad maxproc field \"{maxproc}\"")
        overrides: list[tuple[str, str]] = []
        plain: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "-o" or (arg.startswith("-o") and "=" in arg):
                value = arg[2:] if arg != "-o" else (args[i + 1] if i + 1 < len(args) else "")
                if arg == "-o":
                    i += 1
                key, eq, val = value.partition("=")
                if not eq or not _PARAMETER_NAME.fullmatch(key.strip()):
                    raise ConfigError(f"{where}: bad -o option \"{value}\" (expected name=value)")
                overrides.append((key.strip(), val.strip()))
            else:
                plain.append(arg)
            i += 1
        service = Service(
            name=name, type="unix" if kind == "fifo" else kind,
            private=False if kind == "inet" else _flag(private, True, "private", where),
            unpriv=_flag(unpriv, True, "unpriv", where),
            chroot=_flag(chroot, False, "chroot", where),
            wakeup=int(wake), maxproc=limit, command=command,
            args=tuple(plain), overrides=tuple(overrides), line=number,
        )
        if service.key in seen:
            raise ConfigError(f"{where}: duplicate service {service.key}")
        if service.type == "inet":
            try:
                service.inet_address()
            except ConfigError:            # name this file, not "master.cf"
                raise ConfigError(f"{where}: {_bad_port(name)}") from None
        seen.add(service.key)
        result.services.append(service)
    return result


def load_master_cf(config_dir: str) -> MasterConfig:
    path = os.path.join(config_dir, "master.cf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return parse_master_cf(fh.read(), path)
    except FileNotFoundError:
        raise ConfigError(f"open {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror}") from None
