"""The shared daemon skeleton: every program master starts runs inside it.

master (see :mod:`postpy.master.supervisor`) starts a daemon as::

    python libexec/<command> [-o name=value ...] [args ...]

with its listening sockets inherited as file descriptors 3, 4, ... and
these environment variables (the whole contract between the two):

==========================  ==================================================
``POSTPY_CONFIG``           configuration directory
``POSTPY_SERVICE``          master.cf service name (``smtpd``, ``127.0.0.1:25``)
``POSTPY_SERVICE_TYPE``     ``inet`` or ``unix``
``POSTPY_LISTEN_FDS``       number of inherited listening sockets
``POSTPY_STATUS_FD``        pipe to master for busy/available reports
``POSTPY_UNPRIV``           ``1``: drop to mail_owner (when root)
``POSTPY_CHROOT``           ``1``: chroot to queue_directory first
``POSTPY_MASTER_PID``       master's pid (a daemon exits when master is gone)
==========================  ==================================================

master starts every daemon with SIGUSR1 and SIGTERM blocked; :func:`prepare`
installs their handlers and only then unblocks them, so a signal sent while
the daemon starts waits for its handler instead of killing it.

The skeleton reads main.cf (plus the service's ``-o`` overrides), sets up
logging and the process title (``postpy/smtpd``), changes directory to
``queue_directory`` (so every service uses queue-relative paths, which stay
valid inside a chroot), optionally chroots, drops privileges, and then
serves until ``max_idle`` seconds pass without work or ``max_use``
connections have been served.

Reports to master are ``struct "=iB"``: pid and 0 (available) or 1 (busy).
master spawns another process of a service only when none is available.

Signals: SIGUSR1 asks a daemon to finish what it is doing and exit
(master's reload): it stops accepting, lets connections in progress
complete, and exits.  SIGTERM (master's stop) does the same for the single
servers and for multi servers started with ``drain_on_stop`` (qmgr and the
smtp agent, whose work in flight is a delivery); other multi servers
(smtpd) exit at once, as nothing they do is acknowledged before it is
queued.  master bounds either wait and then kills what is left.

When master is gone (its end of the status pipe closed: the daemon's end
polls with an error at once, no matter what the daemon is doing in its
event loop) the daemon closes its listening sockets at once, so a new
master can bind them, and then stops as on SIGTERM.

Three ways to serve:
- :func:`run_sync_server`: one connection at a time, blocking code
  (Postfix's single_server; cleanup, local, pickup).
- :func:`run_async_server`: asyncio, many connections per process
  (multi_server; smtpd, smtp).
- ``persistent=True`` on either: never exit for idleness, for services
  master keeps running and wakes with triggers (qmgr, pickup).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from postpy.config.maincf import Config, ConfigError, load_config
from postpy.server import preload
from postpy.util import maillog, privs

STATUS = struct.Struct("=iB")
AVAILABLE, BUSY = 0, 1
FIRST_LISTEN_FD = 3
ACCEPT_TURNS = 10      # event loop turns from accept() to a connection's handler task


@dataclass
class ServerContext:
    program: str
    service: str
    service_type: str
    cfg: Config
    args: list[str]
    listen: list[socket.socket]
    queue_directory: str
    identity: privs.Identity
    master_pid: int = 0
    status_fd: int = -1
    stopping: bool = False
    drain_on_stop: bool = True     # SIGTERM: finish work in flight (else exit at once)
    master_gone: bool = False
    served: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    on_stop: list[Callable[[], None]] = field(default_factory=list)   # run when stopping begins
    on_terminate: list[Callable[[], None]] = field(default_factory=list)   # stop or master gone, not reload

    def report(self, state: int) -> None:
        if self.status_fd < 0:
            return
        try:
            os.write(self.status_fd, STATUS.pack(os.getpid(), state))
        except OSError:
            # master is gone: nobody will supervise us, so stop.
            self.stopping = True

    def master_alive(self) -> bool:
        if self.master_gone:
            return False
        if self.status_fd >= 0 and status_pipe_broken(self.status_fd):
            self.master_gone = True
        elif self.master_pid and os.getppid() != self.master_pid:
            self.master_gone = True
        return not self.master_gone

    def close_listeners(self) -> None:
        """Stop listening for good (a new master must be able to bind)."""
        for sock in self.listen:
            sock.close()
        self.listen = []

    def terminate(self) -> None:
        """SIGTERM: drain like a reload, or exit at once."""
        self.stopping = True
        if not self.drain_on_stop:
            os._exit(0)


STOP_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGTERM})


def block_stop_signals() -> None:
    """Hold SIGUSR1 and SIGTERM pending (master does this in a new child before exec)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def status_pipe_broken(fd: int) -> bool:
    """True when master's (reading) end of the status pipe is closed: the
    write end then polls with POLLERR."""
    poller = select.poll()
    poller.register(fd, 0)
    return any(event & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, event in poller.poll(0))


def split_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``-o name=value`` overrides and the remaining arguments."""
    overrides: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            arg = "-o" + next(it, "")
        if arg.startswith("-o") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            overrides[name.strip()] = value.strip()
        else:
            rest.append(arg)
    return overrides, rest


def prepare(program: str, argv: list[str] | None = None,
            *, before_jail: Callable[[ServerContext], None] | None = None) -> ServerContext:
    """Everything a daemon does before serving.  ``before_jail`` runs as the
    starting user, before chroot and privilege drop (open what you need)."""
    preload.preload(program)     # what it loads on first use, while it can still read it
    overrides, rest = split_args(sys.argv[1:] if argv is None else argv)
    env = os.environ
    try:
        cfg = load_config(env.get("POSTPY_CONFIG"), overrides=overrides)
        nfds = int(env.get("POSTPY_LISTEN_FDS", "0"))
        queue_directory = os.path.abspath(cfg.get_path("queue_directory"))
        maillog.setup_from_config(program, cfg, stderr=not env.get("POSTPY_STATUS_FD"))
        identity = privs.mail_owner_identity(cfg.get("mail_owner"))
    except (ConfigError, privs.PrivilegeError) as exc:
        maillog.setup(program, stderr=True)
        maillog.fatal(str(exc))
    _set_title(cfg, program, env.get("POSTPY_SERVICE", program))
    listen = []
    for fd in range(FIRST_LISTEN_FD, FIRST_LISTEN_FD + nfds):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        listen.append(sock)
    ctx = ServerContext(
        program=program, service=env.get("POSTPY_SERVICE", program),
        service_type=env.get("POSTPY_SERVICE_TYPE", "unix"), cfg=cfg, args=rest,
        listen=listen, queue_directory=queue_directory, identity=identity,
        master_pid=int(env.get("POSTPY_MASTER_PID", "0")),
        status_fd=int(env.get("POSTPY_STATUS_FD", "-1")),
    )
    try:
        os.chdir(queue_directory)
    except OSError as exc:
        maillog.fatal(f"chdir {queue_directory}: {exc.strerror}")
    if before_jail:
        before_jail(ctx)
    if os.getuid() == 0:
        if env.get("POSTPY_CHROOT") == "1":
            privs.enter_chroot(queue_directory)
        if env.get("POSTPY_UNPRIV", "1") == "1":
            privs.drop_to(identity.uid, identity.gid)
    signal.signal(signal.SIGUSR1, lambda *_: setattr(ctx, "stopping", True))
    signal.signal(signal.SIGTERM, lambda *_: ctx.terminate())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Now that the handlers are set, take what master sent while we started.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return ctx


def _set_title(cfg: Config, program: str, service: str) -> None:
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a dependency, but titles are cosmetic
        return
    title = f"{cfg.get('syslog_name')}/{program}"
    if service != program:
        title += f" -n {service}"
    setproctitle.setproctitle(title)


# -- single_server: blocking, one connection at a time --------------------------

def run_sync_server(ctx: ServerContext, handler: Callable[[ServerContext, socket.socket], None],
                    *, persistent: bool = False) -> None:
    """Accept and serve one connection at a time until idle/use limits."""
    max_idle = ctx.cfg.get_time("max_idle")
    max_use = ctx.cfg.get_int("max_use")
    idle_since = time.monotonic()
    ctx.report(AVAILABLE)
    # master's death makes the status pipe's write end "readable" (POLLERR).
    watch: list[Any] = [ctx.status_fd] if ctx.status_fd >= 0 else []
    # A stop signal makes select() return at once (the handler only sets a
    # flag, and select is retried after it): the wake-up fd is readable then.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    watch.append(wake_r)
    while not ctx.stopping:
        if not ctx.master_alive():
            ctx.close_listeners()
            break
        if not persistent and time.monotonic() - idle_since > max_idle:
            break
        try:
            ready, _, _ = select.select([*ctx.listen, *watch], [], [], 1.0)
        except InterruptedError:
            continue
        if wake_r in ready:
            _drain(wake_r)
        for lsock in ready:
            if lsock is ctx.status_fd or ctx.stopping:
                break
            if lsock is wake_r:
                continue
            try:
                conn, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                continue   # another process took it
            conn.setblocking(True)
            ctx.report(BUSY)
            try:
                handler(ctx, conn)
            except Exception as exc:  # a bad client must not kill the daemon
                maillog.warning(f"{ctx.program}: {type(exc).__name__}: {exc}")
            finally:
                conn.close()
            ctx.served += 1
            idle_since = time.monotonic()
            if not persistent and ctx.served >= max_use:
                ctx.stopping = True
                break
            ctx.report(AVAILABLE)
    sys.exit(0)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


# -- multi_server: asyncio, many connections per process ------------------------

AsyncHandler = Callable[[ServerContext, Any, Any], Awaitable[None]]


def run_async_server(ctx: ServerContext, handler: AsyncHandler, *,
                     busy_at: int = 100, persistent: bool = False, drain_on_stop: bool = False,
                     startup: Callable[[ServerContext], Coroutine[Any, Any, None]] | None = None) -> None:
    """Serve every connection as a task on one event loop.

    The process reports busy to master while it has ``busy_at`` or more
    connections, so master starts another process for the overflow.
    ``startup`` runs as a task beside the listeners (qmgr's scheduler); on
    any stop it sees ``ctx.stopping`` and is awaited to its end, so what it
    has in flight is finished before the loop (and its executor) goes away.
    ``drain_on_stop``: SIGTERM and master's death also let connections in
    progress finish (else the process exits at once).
    """
    import asyncio

    ctx.drain_on_stop = drain_on_stop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def stop() -> None:
            ctx.stopping = True
            wake.set()
            for notify in ctx.on_stop:     # a background task waiting on its own event
                notify()

        def on_term() -> None:
            stop()
            for notify in ctx.on_terminate:
                notify()
            ctx.terminate()

        def stop_accepting() -> None:
            """No new connections, without closing the servers yet.  A
            connection accepted in this loop turn still needs its server open
            when its setup task runs (asyncio drops it silently otherwise:
            the client sees the connection closed before the greeting), so
            servers are closed only after that, by close_servers()."""
            for server in servers:
                for lsock in server.sockets:
                    loop.remove_reader(lsock.fileno())

        def close_servers() -> None:
            for server in servers:
                server.close()        # closes the listening sockets: free for a new master

        def on_master_gone() -> None:
            loop.remove_reader(ctx.status_fd)
            ctx.master_gone = True
            stop_accepting()
            loop.call_soon(close_servers)   # after the setup tasks already scheduled
            ctx.listen = []
            stop()
            for notify in ctx.on_terminate:
                notify()
            if not drain_on_stop:
                os._exit(0)

        loop.add_signal_handler(signal.SIGUSR1, stop)
        loop.add_signal_handler(signal.SIGTERM, on_term)
        active: set[asyncio.Task[None]] = set()
        max_idle = ctx.cfg.get_time("max_idle")
        max_use = ctx.cfg.get_int("max_use")
        state = {"idle_since": time.monotonic(), "busy": False}

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            active.add(task)
            ctx.served += 1
            if len(active) >= busy_at and not state["busy"]:
                state["busy"] = True
                ctx.report(BUSY)
            try:
                await handler(ctx, reader, writer)
            except Exception as exc:   # a bad client must not kill the daemon
                maillog.warning(f"{ctx.program}: {type(exc).__name__}: {exc}")
            finally:
                active.discard(task)
                writer.close()
                state["idle_since"] = time.monotonic()
                if state["busy"] and len(active) < busy_at:
                    state["busy"] = False
                    ctx.report(AVAILABLE)
                if ctx.stopping:
                    wake.set()

        servers: list[asyncio.Server] = []
        for lsock in ctx.listen:
            if lsock.family == socket.AF_UNIX:
                servers.append(await asyncio.start_unix_server(on_connect, sock=lsock, limit=1 << 20))
            else:
                servers.append(await asyncio.start_server(on_connect, sock=lsock, limit=1 << 20))
        if ctx.status_fd >= 0:
            # The write end of a pipe polls "readable" (an error) once master's end is closed.
            loop.add_reader(ctx.status_fd, on_master_gone)
        ctx.report(AVAILABLE)
        background: asyncio.Task[None] | None = asyncio.create_task(startup(ctx)) if startup else None
        if background is not None:
            background.add_done_callback(lambda _: wake.set())
        closing = False
        while True:
            try:
                await asyncio.wait_for(wake.wait(), 0.5)
            except TimeoutError:
                pass
            wake.clear()
            if background is not None and background.done():
                exc = background.exception()
                if exc is not None:
                    maillog.fatal(f"{ctx.program}: {type(exc).__name__}: {exc}")
                background = None
            if closing:
                if not active and background is None:
                    break
                continue
            done_using = not persistent and ctx.served >= max_use
            idle = not active and time.monotonic() - state["idle_since"] > max_idle
            if ctx.stopping or done_using or not ctx.master_alive():
                ctx.stopping = True
                if not ctx.master_alive() and not drain_on_stop:
                    break
                # The background task (qmgr's scheduler) sees ctx.stopping and
                # finishes its work in flight; it is waited for as connections are.
                closing = True
            elif idle and not persistent:
                closing = True
            if closing:
                stop_accepting()
                # A connection accepted just before takes a few loop turns to
                # reach on_connect (accept task, transport, protocol): let it
                # get into ``active`` before anyone decides there is no work.
                for _ in range(ACCEPT_TURNS):
                    await asyncio.sleep(0)
                close_servers()
                if not active and background is None:
                    break

    asyncio.run(main())
    sys.exit(0)
