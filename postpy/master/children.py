"""Starting one daemon process for master: fork, arrange descriptors, exec.

The child's descriptors are laid out as :mod:`postpy.server.skeleton`
expects: the service's listening sockets at 3, 4, ..., then the write end of
master's status pipe.  Everything else is closed.  The environment carries
the POSTPY_* variables of the skeleton's contract plus what
``import_environment`` lets through.

The child execs with SIGUSR1 and SIGTERM blocked (the mask survives exec):
a reload or stop that reaches it before its handlers are installed stays
pending until :func:`postpy.server.skeleton.prepare` unblocks them.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from postpy.config.maincf import Config
from postpy.config.mastercf import Service
from postpy.server.skeleton import FIRST_LISTEN_FD, block_stop_signals

ALWAYS_PASSED = ("PATH", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass
class Child:
    pid: int
    service_key: str
    generation: int
    started: float
    available: bool = True
    ready: bool = False          # reported on the status pipe: its start-up is done
    retiring: bool = False       # asked to exit (reload): its exit is never a failure


@dataclass
class SpawnPlan:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def daemon_directory(cfg: Config) -> str:
    """Where the programs of master.cf live: ``daemon_directory`` or the checkout's libexec/."""
    configured = cfg.get_path("daemon_directory")
    if configured:
        return configured
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    local = os.path.join(here, "libexec")
    if os.path.isdir(local):
        return local
    return os.path.join(sys.prefix, "libexec", "postpy")


def child_environment(cfg: Config) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ALWAYS_PASSED:
        if name in os.environ:
            env[name] = os.environ[name]
    for item in cfg.get_list("import_environment"):
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def plan(cfg: Config, service: Service, nlisten: int, status_fd: int) -> SpawnPlan:
    command = service.command
    path = command if os.path.isabs(command) else os.path.join(daemon_directory(cfg), command)
    argv = [sys.executable, path]
    for name, value in service.overrides:
        argv += ["-o", f"{name}={value}"]
    argv += list(service.args)
    env = child_environment(cfg)
    env.update({
        "POSTPY_CONFIG": cfg.config_dir,
        "POSTPY_SERVICE": service.name,
        "POSTPY_SERVICE_TYPE": service.type,
        "POSTPY_LISTEN_FDS": str(nlisten),
        "POSTPY_STATUS_FD": str(FIRST_LISTEN_FD + nlisten),
        "POSTPY_UNPRIV": "1" if service.unpriv else "0",
        "POSTPY_CHROOT": "1" if service.chroot else "0",
        "POSTPY_MASTER_PID": str(os.getpid()),
    })
    return SpawnPlan(argv, env)


def spawn(spawn_plan: SpawnPlan, listen: list[socket.socket], status_fd: int) -> int:
    """Fork and exec; returns the child's pid.  Only async-signal-safe work in the child."""
    sources = [s.fileno() for s in listen] + [status_fd]
    pid = os.fork()
    if pid:
        return pid
    try:
        block_stop_signals()
        # Move every source out of the way first, so dup2 never clobbers one.
        high = [os.dup(fd) for fd in sources]
        for target, fd in enumerate(high, FIRST_LISTEN_FD):
            os.dup2(fd, target, inheritable=True)
        last = FIRST_LISTEN_FD + len(high)
        os.closerange(last, 65536)
        os.execve(spawn_plan.argv[0], spawn_plan.argv, spawn_plan.env)
    except BaseException as exc:  # noqa: BLE001 - nothing may return into master's code
        try:
            os.write(2, f"postpy/master: exec {spawn_plan.argv[1]}: {exc}\n".encode())
        finally:
            os._exit(127)
    raise AssertionError("unreachable")
