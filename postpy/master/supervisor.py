"""master: the only long-lived root process; it runs the services of master.cf.

master opens every listening socket itself (inet ``host:port``, unix
sockets under ``private/`` and ``public/``), and starts a service's daemon
when a connection waits on its socket and none of its processes is
available (each daemon reports busy/available over a status pipe), up to
``maxproc``.  Services with a ``wakeup`` time (qmgr, pickup) are kept
running and are sent a wake-up trigger that often.

A child that exits with an error status before it reported ready on the
status pipe failed to start: its service is throttled (no new process),
first for a second, then twice as long after each further failure, up to
``service_throttle_time``; a child that reports ready resets the delay.  So
a broken program cannot spin, but one bad start costs seconds, not a
minute.  A death by a signal (an OOM kill, an admin's kill) or any death
after the child was ready is logged and the process replaced, never
throttled; neither is the exit of a child that was asked to exit.

Signals: SIGHUP reloads main.cf and master.cf (sockets of services that
still exist are kept, so no connection is refused; old processes get
SIGUSR1 and finish their work before exiting -- a child still starting gets
it once it reports ready, and holds it blocked until then; new ones read the
new configuration).  SIGTERM stops cleanly: master closes its sockets and
sends every child SIGTERM, which lets deliveries in flight finish and be
recorded (see :mod:`postpy.server.skeleton`), then SIGKILLs whatever is left
after ``STOP_GRACE``.  SIGINT (``postpy abort``) SIGKILLs the children at
once.

At start a busy inet address is retried for ``BIND_PATIENCE`` seconds: the
daemons of a master that was killed close their listening sockets as soon
as they see it gone, which takes a moment.

The pid file ``$queue_directory/pid/master.pid`` is held with an exclusive
lock while master runs, so two masters can never share a queue directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import signal
import socket
import stat
import time
from dataclasses import dataclass, field

from postpy.config.maincf import Config, ConfigError, load_config
from postpy.config.mastercf import MasterConfig, Service, load_master_cf
from postpy.ipc.trigger import WAKEUP, send_trigger
from postpy.master import children
from postpy.master.children import Child
from postpy.queue import layout
from postpy.server.skeleton import AVAILABLE, STATUS
from postpy.util import maillog, privs

FIRST_THROTTLE = 1.0        # seconds: the first pause after a failed start; doubles
STOP_GRACE = 20.0           # seconds children get to finish their work on stop before SIGKILL
BIND_PATIENCE = 5.0         # seconds a busy inet address is retried at start
PID_FILE = "pid/master.pid"


class MasterError(Exception):
    """master cannot start (already running, bad configuration, ...)."""


@dataclass
class ServiceState:
    service: Service
    sockets: list[socket.socket] = field(default_factory=list)
    throttled_until: float = 0.0
    throttle_delay: float = 0.0    # the last pause; 0 after a successful start
    next_wakeup: float = 0.0
    retired: bool = False          # removed by a reload; waits for its children

    def limit(self, cfg: Config) -> int:
        return self.service.maxproc if self.service.maxproc is not None else cfg.get_int("default_process_limit")


def lock_pid_file(queue_directory: str) -> int:
    """Open and lock the pid file; raise MasterError when another master holds it."""
    path = os.path.join(queue_directory, PID_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise MasterError("the mail system is already running") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%10d\n" % os.getpid(), 0)
    return fd


def running_pid(queue_directory: str) -> int | None:
    """The pid of the master that holds the lock on this queue, or None."""
    path = os.path.join(queue_directory, PID_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 64, 0).strip()
            return int(text) if text.isdigit() else None
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Master:
    def __init__(self, config_dir: str) -> None:
        self.config_dir = config_dir
        self.cfg: Config = load_config(config_dir)
        self.master_cf: MasterConfig = load_master_cf(self.cfg.config_dir)
        self.queue_directory = os.path.abspath(self.cfg.get_path("queue_directory"))
        self.owner = privs.mail_owner_identity(self.cfg.get("mail_owner"))
        self.services: dict[str, ServiceState] = {}
        self.children: dict[int, Child] = {}
        self.generation = 0
        self.selector = selectors.DefaultSelector()
        self.watched: set[int] = set()      # listening sockets in the selector
        self.stopping = False
        self.aborting = False
        self.bind_patience = BIND_PATIENCE   # at start only: a reload must not stall
        self.reload_requested = False
        self.pid_fd = -1
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        self.signal_r, self.signal_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.pending_signals: list[int] = []
        self.status_buffer = b""

    # -- start-up -------------------------------------------------------------
    def start(self) -> None:
        maillog.setup_from_config("master", self.cfg)
        problems = layout.check_layout(self.queue_directory, self.owner.uid, self.owner.gid, repair=True)
        for problem in problems:
            maillog.info(f"queue layout: {problem}")
        self.pid_fd = lock_pid_file(self.queue_directory)
        os.set_blocking(self.signal_w, False)
        signal.set_wakeup_fd(self.signal_w)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.selector.register(self.status_r, selectors.EVENT_READ, "status")
        self.selector.register(self.signal_r, selectors.EVENT_READ, "signal")
        self._apply_services(self.master_cf)
        self.bind_patience = 0.0
        maillog.info(f"daemon started -- version {self.cfg.get('mail_version')}, "
                     f"configuration {self.cfg.config_dir}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    # -- sockets --------------------------------------------------------------
    def _open_sockets(self, service: Service) -> list[socket.socket]:
        if service.type == "inet":
            host, port = service.inet_address()
            hosts = [host] if host else self._inet_hosts()
            socks = []
            for h in hosts:
                family = socket.AF_INET6 if ":" in h else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    self._bind_inet(sock, (h, port))
                except OSError as exc:
                    sock.close()
                    raise MasterError(f"bind {h} port {port}: {exc.strerror}") from None
                sock.listen(256)
                sock.setblocking(False)
                socks.append(sock)
            return socks
        path = service.socket_path(self.queue_directory)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The mode comes from the umask at bind time and the owner is set
        # without following links: mail_owner owns the directory and could
        # swap the name for a symlink between two calls by name.
        old_umask = os.umask(0o111)
        try:
            sock.bind(path)
            if os.getuid() == 0:
                os.chown(path, self.owner.uid, self.owner.gid, follow_symlinks=False)
        except OSError as exc:
            sock.close()
            raise MasterError(f"bind {path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        sock.listen(256)
        sock.setblocking(False)
        return [sock]

    def _bind_inet(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Bind, retrying a busy address for ``bind_patience`` seconds."""
        deadline = time.monotonic() + self.bind_patience
        while True:
            try:
                sock.bind(address)
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    def _inet_hosts(self) -> list[str]:
        interfaces = self.cfg.get_list("inet_interfaces")
        protocols = self.cfg.get_list("inet_protocols")
        if interfaces in (["all"], []):
            hosts = []
            if "ipv6" in protocols or "all" in protocols:
                hosts.append("::")
            if "ipv4" in protocols or "all" in protocols:
                hosts.append("0.0.0.0")
            return hosts
        return [("127.0.0.1" if h == "loopback-only" else h).strip("[]") for h in interfaces]

    def _close_sockets(self, state: ServiceState) -> None:
        for sock in state.sockets:
            self._unwatch(sock)
            if sock.family == socket.AF_UNIX:
                try:
                    os.unlink(state.service.socket_path(self.queue_directory))
                except OSError:
                    pass
            sock.close()
        state.sockets = []

    def _watch(self, sock: socket.socket, key: str) -> None:
        if sock.fileno() not in self.watched:
            self.selector.register(sock, selectors.EVENT_READ, key)
            self.watched.add(sock.fileno())

    def _unwatch(self, sock: socket.socket) -> None:
        if sock.fileno() in self.watched:
            self.watched.discard(sock.fileno())
            self.selector.unregister(sock)

    # -- services -------------------------------------------------------------
    def _apply_services(self, new: MasterConfig) -> None:
        """Bring the running set of services in line with ``new`` (start or reload)."""
        wanted = new.by_key()
        for key, old in list(self.services.items()):
            if key not in wanted:
                self._close_sockets(old)
                old.retired = True
        for key, service in wanted.items():
            state: ServiceState | None = self.services.get(key)
            if state is None or state.retired:
                state = ServiceState(service, self._open_sockets(service))
                self.services[key] = state
            else:
                state.service = service
                state.throttled_until = 0.0
                state.throttle_delay = 0.0
            now = time.monotonic()
            state.next_wakeup = now + service.wakeup if service.wakeup else 0.0

    def _count(self, key: str) -> int:
        return sum(1 for c in self.children.values() if c.service_key == key)

    def _available(self, key: str) -> int:
        return sum(1 for c in self.children.values()
                   if c.service_key == key and c.available and c.generation == self.generation)

    def _spawn(self, key: str) -> None:
        state = self.services[key]
        plan = children.plan(self.cfg.with_overrides(dict(state.service.overrides)),
                             state.service, len(state.sockets), self.status_w)
        pid = children.spawn(plan, state.sockets, self.status_w)
        self.children[pid] = Child(pid, key, self.generation, time.monotonic())

    def _schedule(self) -> None:
        """Start what must run; watch the sockets of services that could use a process."""
        now = time.monotonic()
        for key, state in self.services.items():
            if state.retired:
                continue
            throttled = now < state.throttled_until
            room = self._count(key) < state.limit(self.cfg)
            if state.service.wakeup and not throttled and room and self._count(key) == 0:
                self._spawn(key)
            wants_process = not throttled and room and self._available(key) == 0
            for sock in state.sockets:
                if wants_process and not self.stopping:
                    self._watch(sock, key)
                else:
                    self._unwatch(sock)
            if state.service.wakeup and now >= state.next_wakeup:
                state.next_wakeup = now + state.service.wakeup
                if state.service.type == "unix":
                    send_trigger(state.service.socket_path(self.queue_directory), WAKEUP, timeout=1.0)

    # -- events ---------------------------------------------------------------
    def _read_status(self) -> None:
        try:
            data = os.read(self.status_r, 4096)
        except BlockingIOError:
            return
        self.status_buffer += data
        size = STATUS.size
        while len(self.status_buffer) >= size:
            pid, state = STATUS.unpack(self.status_buffer[:size])
            self.status_buffer = self.status_buffer[size:]
            child = self.children.get(pid)
            if child is None:
                continue
            if not child.ready:
                child.ready = True
                service = self.services.get(child.service_key)
                if service is not None:
                    service.throttle_delay = 0.0      # a successful start
                if child.retiring:
                    # A reload happened while it started: tell it now.
                    self._kill(pid, signal.SIGUSR1)
            child.available = state == AVAILABLE and not child.retiring

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            state = self.services.get(child.service_key)
            if os.WIFSIGNALED(status):
                why = f"killed by signal {os.WTERMSIG(status)}"
            else:
                code = os.waitstatus_to_exitcode(status)
                why = f"exit status {code}" if code else ""
            if why and not self.stopping:
                command = state.service.command if state else child.service_key
                maillog.warning(f"process {command} pid {pid} {why}")
                if state is not None and failed_start(child, status):
                    self._throttle(state)
                    maillog.warning(f"{command}: bad command startup -- throttling")
            if state is not None and state.retired and self._count(child.service_key) == 0:
                del self.services[child.service_key]

    def _throttle(self, state: ServiceState) -> None:
        """No new process for a while: 1 s, then doubling up to service_throttle_time."""
        limit = self.cfg.get_time("service_throttle_time")
        state.throttle_delay = min(max(FIRST_THROTTLE, 2 * state.throttle_delay), limit)
        state.throttled_until = time.monotonic() + state.throttle_delay

    def _handle_signals(self) -> None:
        try:
            os.read(self.signal_r, 512)
        except BlockingIOError:
            pass
        pending, self.pending_signals = self.pending_signals, []
        for signum in pending:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self.reload_requested = True
            elif signum in (signal.SIGTERM, signal.SIGINT):
                maillog.info(f"terminating on signal {signum}")
                self.stopping = True
                self.aborting = self.aborting or signum == signal.SIGINT

    def reload(self) -> None:
        self.reload_requested = False
        try:
            cfg = load_config(self.config_dir)
            master_cf = load_master_cf(cfg.config_dir)
            for error in cfg.validate():
                raise ConfigError(error)
        except (ConfigError, ValueError, OSError) as exc:
            maillog.warning(f"reload failed, keeping the old configuration: {exc}")
            return
        self.cfg, self.master_cf = cfg, master_cf
        maillog.setup_from_config("master", self.cfg)
        self.generation += 1
        try:
            self._apply_services(master_cf)
        except (MasterError, OSError) as exc:
            maillog.warning(f"reload: {exc}")
        for child in self.children.values():
            if child.generation < self.generation and not child.retiring:
                child.available = False
                child.retiring = True
                if child.ready:       # else when it reports ready (_read_status)
                    self._kill(child.pid, signal.SIGUSR1)
        maillog.info(f"reload -- version {self.cfg.get('mail_version')}, configuration {self.cfg.config_dir}")

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def run(self) -> None:
        """The event loop, until SIGTERM."""
        while not self.stopping:
            if self.reload_requested:
                self.reload()
            self._schedule()
            for key, _ in self.selector.select(self._timeout()):
                if key.data == "status":
                    self._read_status()
                elif key.data == "signal":
                    self._handle_signals()
                else:
                    # A connection waits and no process is available: start one,
                    # then stop watching until it reports.
                    state = self.services.get(key.data)
                    if state and self._count(key.data) < state.limit(self.cfg):
                        self._spawn(key.data)
                    self._unwatch(key.fileobj)  # type: ignore[arg-type]
            self._reap()
        self.shutdown()

    def _timeout(self) -> float:
        """Wake within a second, and when a throttled service may run again."""
        now = time.monotonic()
        ends = [s.throttled_until - now for s in self.services.values() if s.throttled_until > now]
        return max(0.01, min([1.0, *ends]))

    def shutdown(self) -> None:
        """Stop accepting, then let the children finish (stop) or kill them (abort)."""
        for state in self.services.values():
            self._close_sockets(state)
        for pid in list(self.children):
            self._kill(pid, signal.SIGKILL if self.aborting else signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            if self.children:
                time.sleep(0.05)
        for pid in list(self.children):
            self._kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        if self.pid_fd >= 0:
            os.ftruncate(self.pid_fd, 0)
            os.close(self.pid_fd)
        maillog.info("daemon stopped")


def failed_start(child: Child, status: int) -> bool:
    """Did this exit show a program that cannot start?  Only an error exit
    before the child reported ready, and not one it was asked for."""
    return (not child.ready and not child.retiring and os.WIFEXITED(status)
            and os.waitstatus_to_exitcode(status) != 0)


def run_master(config_dir: str, ready_fd: int = -1) -> int:
    """Run master until it stops; its exit status.  ``ready_fd``, when given,
    gets one byte once master holds its lock and sockets, and is closed
    (``postpy start`` waits on it, and sees its end-of-file if master dies)."""
    try:
        import setproctitle

        setproctitle.setproctitle("postpy/master")
    except ImportError:  # pragma: no cover - a dependency, but titles are cosmetic
        pass
    try:
        master = Master(config_dir)
        errors = master.cfg.validate()
        if errors:
            raise ConfigError(errors[0])
        master.start()
    except (ConfigError, MasterError, privs.PrivilegeError, ValueError, OSError) as exc:
        maillog.error(str(exc))
        return 1
    if ready_fd >= 0:
        try:
            os.write(ready_fd, b"R")
        except OSError:
            pass          # postpy start gave up waiting; master runs anyway
        os.close(ready_fd)
    master.run()
    return 0
