"""pipe(8): deliver mail to an external command named in master.cf.

master starts it for services such as::

    spamfilter unix - n n - - pipe flags=Rq user=spamd
        argv=/usr/bin/spamc -e /usr/sbin/sendmail -oi -f ${sender} ${recipient}
    procmail   unix - n n - - pipe flags=DRhu user=vmail argv=/usr/bin/procmail -d ${user}

with ``unpriv = n``: it stays root (when master is root) only to start each
command as the ``user=`` of its service; the command itself never runs as
root (:func:`postpy.mail.command.run` drops all privileges in the child and
refuses uid 0, and :mod:`postpy.pipe.settings` refuses a root ``user=``).
Each process serves one qmgr connection at a time
(:func:`postpy.server.skeleton.run_sync_server`)::

    qmgr -> pipe   DeliveryRequest   (one message, some of its recipients)
    pipe -> qmgr   DeliveryResult    (one RecipientResult per recipient)

For each request the agent reads the message from the queue file (as root,
before anything runs: delivery agents trust the queue file, not the
request), builds the command's input (:mod:`postpy.pipe.content`) and its
arguments (:mod:`postpy.pipe.expand`), runs the command once for all the
request's recipients (qmgr sends at most
``<transport>_destination_recipient_limit`` of them), and gives every
recipient the command's verdict (:func:`postpy.mail.command.verdict`):
exit 0 is ``sent``, ``EX_TEMPFAIL`` or a time-out after
``<transport>_time_limit`` (default ``$command_time_limit``) is
``deferred``, other failures ``bounced`` with the command's output in the
reason that goes into the DSN.  One log line per recipient,
``relay=<service>``.

A service whose attributes are wrong (see :mod:`postpy.pipe.settings`)
still starts: it logs the problem and defers every request with it, so
mail waits in the queue until master.cf is fixed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass

from postpy.config.maincf import Config, ConfigError
from postpy.ipc.messages import DeliveryRequest, DeliveryResult, RecipientResult
from postpy.mail import command
from postpy.mail.events import Timing, log_delivery
from postpy.pipe import content, expand
from postpy.pipe.settings import PipeSettings, parse
from postpy.queue import qfile
from postpy.server import skeleton
from postpy.server.requests import serve_delivery_requests
from postpy.server.skeleton import ServerContext
from postpy.util import maillog, privs

PATH = "/usr/bin:/bin"
PASSED_ENVIRONMENT = ("TZ", "LANG")
CONFIG_DSN = "4.3.5"


@dataclass(frozen=True)
class Verdict:
    status: str             # sent | deferred | bounced
    dsn: str
    text: str


class PipeAgent:
    def __init__(self, service: str, settings: PipeSettings | None, problem: str, *,
                 time_limit: float, delimiter: str, config_dir: str) -> None:
        self.service = service
        self.settings = settings
        self.problem = problem          # non-empty: configuration error, defer everything
        self.time_limit = time_limit
        self.delimiter = delimiter
        self.config_dir = config_dir

    @classmethod
    def from_context(cls, ctx: ServerContext) -> PipeAgent:
        cfg: Config = ctx.cfg
        settings, problem = None, ""
        try:
            settings = parse(ctx.args, cfg.get("mail_owner"))
        except ConfigError as exc:
            problem = f"service {ctx.service}: {exc}"
            maillog.error(f"{problem}; mail for this service is deferred")
        return cls(ctx.service, settings, problem,
                   time_limit=cfg.get_time(f"{ctx.service}_time_limit"),
                   delimiter=cfg.get("recipient_delimiter"), config_dir=cfg.config_dir)

    # -- one request ----------------------------------------------------------
    def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        now = time.time()
        timing = Timing(arrival=request.arrival or now, active=request.active_time or now,
                        dispatch=request.dispatch_time or now)
        verdict = self._verdict(request)
        results = []
        for rcpt in request.recipients:
            log_delivery(request.queue_id, rcpt.address, orig=rcpt.orig, relay=self.service,
                         timing=timing, dsn=verdict.dsn, status=verdict.status, text=verdict.text)
            results.append(RecipientResult(rcpt.index, verdict.status, verdict.dsn, verdict.text,
                                           self.service, self._action(verdict)))
        return DeliveryResult(request.queue_id, results)

    def _action(self, verdict: Verdict) -> str:
        """A success is "relayed" (the command passes the mail on) unless flag X
        says the command delivers it for good, as pipe(8) reports it in DSNs."""
        if verdict.status != "sent" or (self.settings is not None and "X" in self.settings.flags):
            return ""
        return "relayed"

    def _verdict(self, request: DeliveryRequest) -> Verdict:
        settings = self.settings
        if settings is None:
            maillog.warning(f"{request.queue_id}: {self.problem}")
            return Verdict("deferred", CONFIG_DSN, "mail system configuration error")
        problem = content.single_recipient_problem(settings, len(request.recipients), self.service)
        if problem:
            maillog.warning(f"{request.queue_id}: {problem}")
            return Verdict("deferred", CONFIG_DSN, "mail system configuration error")
        try:
            env, body = qfile.read_all(os.path.join(request.queue_name, request.queue_id))
        except (OSError, qfile.CorruptQueueFile) as exc:
            maillog.warning(f"{request.queue_id}: cannot read queue file: {exc}")
            return Verdict("deferred", "4.3.0", "cannot read the queued message")
        if settings.size_limit and len(body) > settings.size_limit:
            return Verdict("bounced", "5.2.3", "message file too big")
        sender = expand.show_address(env.sender, settings.flags, null=settings.null_sender)
        first = request.recipients[0]
        shown_first = expand.show_address(first.address, settings.flags)
        data = content.build(body, settings, sender=sender, recipient=shown_first,
                             original=expand.show_address(first.orig or first.address, settings.flags),
                             arrival=env.arrival)
        argv = expand.expand_argv(settings.argv, self._message_values(request, env, sender, len(body)),
                                  [expand.recipient_values(r.address, r.orig, settings.flags, self.delimiter)
                                   for r in request.recipients])
        return self._run(request.queue_id, argv, data, settings)

    def _message_values(self, request: DeliveryRequest, env: qfile.Envelope, sender: str,
                        size: int) -> dict[str, str]:
        attrs = env.attrs
        nexthop = request.nexthop.lower() if "h" in (self.settings.flags if self.settings else ()) \
            else request.nexthop
        return {
            "sender": sender, "nexthop": nexthop, "queue_id": request.queue_id, "size": str(size),
            "client_address": attrs.get("client_addr", ""), "client_helo": attrs.get("helo", ""),
            "client_hostname": attrs.get("client_name", ""), "client_port": attrs.get("client_port", ""),
            "client_protocol": attrs.get("protocol", ""), "sasl_method": attrs.get("sasl_method", ""),
            "sasl_username": attrs.get("sasl_username", ""), "sasl_sender": "",
        }

    def _who(self, settings: PipeSettings) -> privs.Identity:
        """The user= identity when we can switch to it; ourselves otherwise (embedded mode)."""
        return settings.user if os.getuid() == 0 else privs.current_identity()

    def _run(self, queue_id: str, argv: list[str], data: bytes, settings: PipeSettings) -> Verdict:
        who = self._who(settings)
        env = {"PATH": PATH, "HOME": who.home, "USER": who.name, "LOGNAME": who.name,
               "SHELL": who.shell or "/bin/sh", "MAIL_CONFIG": self.config_dir}
        env.update({name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ})
        try:
            result = command.run(argv, data, who, env, self.time_limit, cwd=settings.directory)
        except privs.PrivilegeError as exc:
            maillog.error(f"{queue_id}: service {self.service}: {exc}")
            return Verdict("deferred", CONFIG_DSN, "mail system configuration error")
        except (OSError, subprocess.SubprocessError) as exc:
            maillog.warning(f"{queue_id}: service {self.service}: cannot execute {argv[0]}: {exc}")
            return Verdict("deferred", "4.3.0", f"cannot execute command: {argv[0]}")
        failure = command.verdict(argv[0], result)
        if failure is None:
            return Verdict("sent", "2.0.0", f"delivered via {self.service} service")
        if result.timed_out:
            maillog.warning(f"{queue_id}: service {self.service}: command {argv[0]} killed after "
                            f"the time limit of {self.time_limit:g}s")
        status = "deferred" if failure.dsn.startswith("4") else "bounced"
        return Verdict(status, failure.dsn, failure.text)


def main() -> None:
    ctx = skeleton.prepare("pipe")
    try:
        agent = PipeAgent.from_context(ctx)
        max_frame = ctx.cfg.get_size("ipc_max_frame")
    except ConfigError as exc:
        maillog.fatal(str(exc))

    def handler(_ctx: ServerContext, conn: socket.socket) -> None:
        serve_delivery_requests(agent.deliver, conn, max_frame)

    skeleton.run_sync_server(ctx, handler)
