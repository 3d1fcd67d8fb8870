"""qmgr's side of the delivery conversation: pools of agent connections.

One :class:`AgentPool` per transport (``local``, ``smtp``, ...).  It keeps
persistent connections to ``private/<transport>``; each connection is one
agent process (master starts another when all are busy), so the number of
connections is the transport's concurrency, bounded by its master.cf
``maxproc``.  Within that, at most ``destination limit`` requests run for one
destination at a time (the next hop; for ``local``, the recipient).

A request whose connection breaks, or that gets no answer within
``ipc_timeout``, ends as "deferred" for all its recipients, so a crashed
agent costs a retry, never a message.  A broken *reused* connection is
retried once on a fresh one (the agent may simply have exited for
idleness).

:meth:`AgentPool.stop` (qmgr is stopping) starts nothing more: waiting jobs
are forgotten and jobs whose request has not been sent yet are cancelled
(their recipients stay pending in the queue file).  A request already sent
runs to its end so its result can be recorded; one that fails while
stopping is left unrecorded too, for the next qmgr to take up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.ipc import codec
from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult, RecipientResult
from postpy.util import maillog

IDLE_CLOSE = 10.0     # seconds an unused agent connection is kept


@dataclass
class Job:
    request: DeliveryRequest
    destination: str
    on_done: Callable[[list[RecipientResult]], None]


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0

    def close(self) -> None:
        self.writer.close()


def deferred_all(request: DeliveryRequest, text: str, dsn: str = "4.3.0") -> list[RecipientResult]:
    return [RecipientResult(r.index, "deferred", dsn, text, "none") for r in request.recipients]


class AgentPool:
    def __init__(self, transport: str, socket_path: str, process_limit: int, destination_limit: int,
                 timeout: float, max_frame: int) -> None:
        self.transport = transport
        self.socket_path = socket_path
        self.process_limit = max(1, process_limit)
        self.destination_limit = max(1, destination_limit)
        self.timeout = timeout
        self.max_frame = max_frame
        # Waiting jobs by destination, and the destinations that have any, in
        # the order they first queued: pump() looks at destinations, not jobs,
        # so a destination at its limit with a long line costs nothing.
        self.waiting: dict[str, deque[Job]] = {}
        self.ready: deque[str] = deque()
        self.idle: list[_Conn] = []
        self.running = 0
        self.per_destination: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.unsent: set[asyncio.Task[None]] = set()   # jobs whose request is not sent yet
        self.stopping = False

    def submit(self, job: Job) -> None:
        line = self.waiting.get(job.destination)
        if line is None:
            line = self.waiting[job.destination] = deque()
            self.ready.append(job.destination)
        line.append(job)
        self.pump()

    def pump(self) -> None:
        """Start waiting jobs while there is room, round-robin over destinations
        that are below their concurrency limit."""
        if self.stopping:
            return
        for _ in range(len(self.ready)):
            if self.running >= self.process_limit:
                return
            destination = self.ready.popleft()
            line = self.waiting[destination]
            while line and self.running < self.process_limit and \
                    self.per_destination[destination] < self.destination_limit:
                self._start(line.popleft())
            if line:
                self.ready.append(destination)
            else:
                del self.waiting[destination]

    def _start(self, job: Job) -> None:
        self.running += 1
        self.per_destination[job.destination] += 1
        task = asyncio.get_running_loop().create_task(self._run(job))
        self.tasks.add(task)
        self.unsent.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(self.unsent.discard)

    def stop(self) -> None:
        """Start nothing more: forget waiting jobs, cancel those not sent yet
        (qmgr is stopping; the files stay in active/ for the next start), and
        close idle connections.  An agent serves one connection until qmgr
        closes it, so an idle one would keep its process -- and the agent's
        socket, where a request sent on a connection no process accepted yet
        waits -- alive until master's grace runs out; closed, the agents exit
        and such a request ends with an error at once."""
        self.stopping = True
        self.waiting.clear()
        self.ready.clear()
        for task in list(self.unsent):
            task.cancel()
        for conn in self.idle:
            conn.close()
        self.idle = []

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.socket_path, limit=self.max_frame + 16), 30)
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: DeliveryRequest) -> DeliveryResult:
        if self.stopping:
            raise asyncio.CancelledError   # never start a delivery once stopping
        task = asyncio.current_task()
        if task is not None:
            self.unsent.discard(task)
        conn.writer.write(codec.encode(request))
        await conn.writer.drain()
        reply = await asyncio.wait_for(
            codec.async_recv(conn.reader, f"{self.transport} agent", self.max_frame), self.timeout)
        return codec.expect(reply, DeliveryResult, f"{self.transport} agent")

    async def _run(self, job: Job) -> None:
        request = job.request
        results: list[RecipientResult] | None
        try:
            request.dispatch_time = time.time()
            conn = self.idle.pop() if self.idle else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._open()
                reply = await self._exchange(conn, request)
            except (EOFError, ConnectionError) as exc:
                if conn is not None:
                    conn.close()
                if not reused or self.stopping:
                    raise
                maillog.info(f"{request.queue_id}: reconnecting to {self.transport}: {exc}")
                conn = await self._open()
                reply = await self._exchange(conn, request)
            conn.last_used = time.monotonic()
            conn.uses += 1
            self.idle.append(conn)
            results = self._checked(request, reply)
        except (TimeoutError, OSError, EOFError, codec.IpcError) as exc:
            text = f"delivery temporarily suspended: {self.transport} agent: {_describe(exc)}"
            maillog.warning(f"{request.queue_id}: {text}")
            # Stopping: no verdict; the recipients stay pending for the next start.
            results = None if self.stopping else deferred_all(request, text)
        except asyncio.CancelledError:
            results = None       # stopped before the request was sent
        finally:
            self.running -= 1
            self.per_destination[job.destination] -= 1
            if not self.per_destination[job.destination]:
                del self.per_destination[job.destination]
        if results is not None:
            job.on_done(results)
        self.pump()

    def _checked(self, request: DeliveryRequest, reply: DeliveryResult) -> list[RecipientResult]:
        """One valid result per requested recipient; anything missing is deferred."""
        wanted = {r.index: r for r in request.recipients}
        results: dict[int, RecipientResult] = {}
        for result in reply.results:
            if result.index in wanted and result.status in ("sent", "deferred", "bounced"):
                results[result.index] = result
        for index, rcpt in wanted.items():
            if index not in results:
                maillog.warning(f"{request.queue_id}: {self.transport} agent gave no result for <{rcpt.address}>")
                results[index] = RecipientResult(index, "deferred", "4.3.0", "no result from delivery agent", "none")
        return list(results.values())

    def close_idle(self, older_than: float = IDLE_CLOSE) -> None:
        now = time.monotonic()
        keep = []
        for conn in self.idle:
            if now - conn.last_used > older_than:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def busy(self) -> bool:
        return bool(self.running or self.waiting)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return "service unavailable"
    return str(exc) or type(exc).__name__


__all__ = ["AgentPool", "Job", "DeliveryRcpt", "deferred_all"]
