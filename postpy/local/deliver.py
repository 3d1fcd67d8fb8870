"""local: carry out one delivery request from qmgr.

For a :class:`postpy.ipc.messages.DeliveryRequest`: read the queue file
once (:func:`postpy.local.message.load`), then for each requested recipient
expand it (:class:`postpy.local.resolve.Resolver`), deliver to every
destination of the plan, log each outcome with
:func:`postpy.mail.events.log_delivery` (``relay=local``; ``to=`` is the
address at the level of expansion that produced the destination,
``orig_to=`` the recipient qmgr asked for), and answer one
:class:`postpy.ipc.messages.RecipientResult` per requested recipient
(:func:`postpy.local.outcome.combine`).  This module is the one place where
errors become results: anything unexpected is a temporary failure, so mail
is never lost to a bug.

What each destination gets (``Delivered-To:`` is the recipient qmgr asked
for, fixed for the whole expansion, like Postfix's
``frozen_delivered_to``):

=============  ==============================  ================================
destination    form                            status text
=============  ==============================  ================================
mailbox        mbox form, Delivered-To always  ``delivered to mailbox``
               Maildir form (home_mailbox or   ``delivered to maildir``
               mail_spool_directory with /)
               mailbox_command                 ``delivered to command: CMD``
/file          mbox form                       ``delivered to file: PATH``
/dir/          Maildir form                    ``delivered to maildir``
|command       From line + trace headers       ``delivered to command: CMD``
address        resubmitted (forward.py)        ``forwarded as ID``
transport      handed to mailbox_transport or  the other agent's result (it
               fallback_transport's agent      logs the delivery itself)
               (handoff.py)
=============  ==============================  ================================

Duplicates: a destination already handled for this request (e.g. two
recipients that both reach alice's mailbox) is not delivered again; it
shares the first outcome.  At most ``duplicate_filter_limit`` destinations
are remembered.

Partial failure: a recipient whose expansion has a deferred destination is
deferred as a whole, and qmgr retries all of it later, so destinations that
succeeded may get a second copy (Postfix has the same limitation).  To keep
that down, local destinations are delivered first, and forwarding (which
would create a new message each time) happens only when none of them
deferred.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from postpy.ipc.messages import DeliveryRcpt, DeliveryRequest, DeliveryResult, RecipientResult
from postpy.local import file as file_dest
from postpy.local import forward, handoff, mailbox, maildir, message, pipe
from postpy.local.message import Message
from postpy.local.outcome import DEFERRED, DeliveryError, Outcome, combine
from postpy.local.resolve import (
    COMMAND,
    FILE,
    FORWARD,
    MAILBOX,
    MAILDIR,
    TRANSPORT,
    Destination,
    Plan,
    Resolver,
)
from postpy.local.settings import LocalSettings
from postpy.mail.events import Timing, log_delivery
from postpy.queue import qfile, qid
from postpy.queue.layout import MESSAGE_QUEUES
from postpy.util import maillog
from postpy.util.privs import PrivilegeError

RELAY = "local"


@dataclass
class _Job:
    """One requested recipient while it is being delivered."""

    req: DeliveryRequest
    rcpt: DeliveryRcpt
    msg: Message
    started: float

    @property
    def orig(self) -> str:
        return self.rcpt.orig or self.rcpt.address


class LocalAgent:
    """Delivers requests; holds what lives longer than one request."""

    def __init__(self, settings: LocalSettings, submit: forward.Submit | None = None) -> None:
        self.settings = settings
        self.submit = submit or forward.cleanup_submitter(settings.cleanup_socket,
                                                          settings.ipc_timeout)
        self._done: dict[tuple[str, ...], Outcome] = {}

    # -- the request --------------------------------------------------------------
    def deliver(self, req: DeliveryRequest) -> DeliveryResult:
        started = time.time()
        self._done = {}
        try:
            msg = self._load(req)
        except DeliveryError as exc:
            outcome = Outcome.failed(exc)
            results = []
            for rcpt in req.recipients:
                self._log(req, rcpt.address, rcpt.orig or rcpt.address, started, outcome)
                results.append(RecipientResult(rcpt.index, outcome.status, outcome.dsn,
                                               outcome.text, RELAY))
            return DeliveryResult(req.queue_id, results)
        results = [self._recipient(_Job(req, rcpt, msg, started)) for rcpt in req.recipients]
        return DeliveryResult(req.queue_id, results)

    def _load(self, req: DeliveryRequest) -> Message:
        if not qid.is_queue_id(req.queue_id) or req.queue_name not in MESSAGE_QUEUES:
            raise DeliveryError("4.3.0", f"bad queue file name: {req.queue_name}/{req.queue_id}")
        path = os.path.join(req.queue_name, req.queue_id)
        try:
            return message.load(path)
        except OSError as exc:
            raise DeliveryError("4.3.0", f"cannot read queue file {path}: "
                                         f"{exc.strerror or exc}") from None
        except qfile.CorruptQueueFile as exc:
            raise DeliveryError("4.3.0", f"corrupt queue file {path}: {exc}") from None

    # -- one recipient ------------------------------------------------------------
    def _recipient(self, job: _Job) -> RecipientResult:
        try:
            plan = Resolver(self.settings, job.msg.delivered_to, job.msg.sender).resolve(
                job.rcpt.address)
        except (PrivilegeError, OSError) as exc:
            plan = None
            failure = Outcome("deferred", "4.3.0", f"local configuration error: {exc}")
        except Exception as exc:  # a bug must not lose mail
            maillog.warning(f"{job.req.queue_id}: resolving {job.rcpt.address}: "
                            f"{type(exc).__name__}: {exc}")
            plan = None
            failure = Outcome("deferred", "4.3.0", "local delivery agent error")
        if plan is None:
            self._log(job.req, job.rcpt.address, job.orig, job.started, failure)
            return RecipientResult(job.rcpt.index, failure.status, failure.dsn, failure.text, RELAY)
        outcomes = self._run_plan(job, plan)
        final = combine(outcomes)
        if not outcomes:
            self._log(job.req, job.rcpt.address, job.orig, job.started, final)
        return RecipientResult(job.rcpt.index, final.status, final.dsn, final.text, RELAY)

    def _run_plan(self, job: _Job, plan: Plan) -> list[Outcome]:
        outcomes = []
        for failure in plan.failures:
            outcome = Outcome.failed(failure.error)
            self._log(job.req, failure.rcpt.address, job.orig, job.started, outcome)
            outcomes.append(outcome)
        for dest in plan.destinations:
            if dest.kind == FORWARD:
                continue
            outcome = self._done.get(dest.key()) or self._once(job, dest)
            outcomes.append(outcome)
        forwards = [d for d in plan.destinations if d.kind == FORWARD]
        if forwards and not any(o.status == DEFERRED for o in outcomes):
            outcomes.extend(self._forward(job, forwards))
        return outcomes

    def _once(self, job: _Job, dest: Destination) -> Outcome:
        if dest.kind == TRANSPORT:
            return self._hand_over(job, dest)
        try:
            text = self._deliver_local(job, dest)
            outcome = Outcome.sent(text)
        except DeliveryError as exc:
            outcome = Outcome.failed(exc)
        except (PrivilegeError, OSError) as exc:
            maillog.warning(f"{job.req.queue_id}: {dest.kind} {dest.value}: {exc}")
            outcome = Outcome("deferred", "4.3.0", f"local delivery error: {exc}")
        except Exception as exc:  # a bug must not lose mail
            maillog.warning(f"{job.req.queue_id}: {dest.kind} {dest.value}: "
                            f"{type(exc).__name__}: {exc}")
            outcome = Outcome("deferred", "4.3.0", "local delivery agent error")
        self._log(job.req, dest.rcpt.address, job.orig, job.started, outcome)
        if len(self._done) < self.settings.duplicate_filter_limit:
            self._done[dest.key()] = outcome
        return outcome

    def _hand_over(self, job: _Job, dest: Destination) -> Outcome:
        """mailbox_transport / fallback_transport: the other agent delivers (and logs)."""
        rcpt = DeliveryRcpt(job.rcpt.index, dest.rcpt.address, job.orig, job.rcpt.orcpt,
                            job.rcpt.notify)
        result, logged = handoff.hand_over(dest.value, job.req, rcpt,
                                           timeout=self.settings.ipc_timeout)
        outcome = Outcome(result.status, result.dsn, result.text)
        if not logged:
            self._log(job.req, dest.rcpt.address, job.orig, job.started, outcome)
        if len(self._done) < self.settings.duplicate_filter_limit:
            self._done[dest.key()] = outcome
        return outcome

    # -- the kinds of destination ------------------------------------------------------
    def _delivered_to(self, job: _Job, kind: str) -> str | None:
        return job.rcpt.address if kind in self.settings.prepend_delivered_header else None

    def _deliver_local(self, job: _Job, dest: Destination) -> str:
        s = self.settings
        msg = job.msg
        if dest.kind == MAILBOX:
            return self._mailbox(job, dest)
        if dest.kind == COMMAND:
            return self._command(job, dest, dest.value)
        if dest.kind == MAILDIR:
            data = message.plain_form(msg, dest.sender, self._delivered_to(job, "file"))
            maildir.deliver(dest.value, data, dest.privs, hostname=s.myhostname,
                            size_limit=s.mailbox_size_limit, fail_dsn="5.2.0")
            return "delivered to maildir"
        if dest.kind == FILE:
            data = message.mbox_form(msg, dest.sender, self._delivered_to(job, "file"))
            file_dest.deliver(dest.value, data, dest.privs, attempts=s.lock_attempts,
                              delay=s.lock_delay, stale_after=s.stale_lock_time,
                              size_limit=s.mailbox_size_limit)
            return f"delivered to file: {dest.value}"
        raise DeliveryError("4.3.0", f"unknown destination kind {dest.kind}")

    def _mailbox(self, job: _Job, dest: Destination) -> str:
        """The user's own mailbox, written as ``dest.privs`` (root for root)."""
        s = self.settings
        owner = dest.owner or dest.privs
        if s.mailbox_command:       # a command: never as root (default_privs instead)
            return self._command(job, replace(dest, privs=s.acting(dest.privs)),
                                 s.mailbox_command)
        if s.home_mailbox.endswith("/") or (not s.home_mailbox and s.spool_maildir):
            base = os.path.join(owner.home, s.home_mailbox) if s.home_mailbox else \
                os.path.join(s.mail_spool_directory, owner.name) + "/"
            data = message.plain_form(job.msg, dest.sender, job.rcpt.address)
            maildir.deliver(base, data, dest.privs, hostname=s.myhostname,
                            size_limit=s.mailbox_size_limit, own_mailbox=True)
            return "delivered to maildir"
        if s.home_mailbox:
            path, spool = os.path.join(owner.home, s.home_mailbox), False
        else:
            path, spool = os.path.join(s.mail_spool_directory, owner.name), True
        policy = mailbox.MboxPolicy(attempts=s.lock_attempts, delay=s.lock_delay,
                                    stale_after=s.stale_lock_time,
                                    size_limit=s.mailbox_size_limit, fail_dsn="4.2.0",
                                    root_fallback=spool, dotlock_required=True,
                                    own_mailbox=True)
        data = message.mbox_form(job.msg, dest.sender, job.rcpt.address)
        try:
            mailbox.append(path, data, dest.privs, policy)
        except DeliveryError as exc:
            raise exc.prefixed(f"cannot update mailbox {path} for user {owner.name}. ") from None
        return "delivered to mailbox"

    def _command(self, job: _Job, dest: Destination, command: str) -> str:
        who = dest.privs
        env = pipe.environment(who, sender=dest.sender, recipient=dest.rcpt.address,
                               local=dest.rcpt.local, extension=dest.rcpt.extension,
                               domain=dest.rcpt.domain, original=job.orig)
        data = message.plain_form(job.msg, dest.sender, self._delivered_to(job, "command"),
                                  with_from_line=True)
        result = pipe.run(command, data, who, env, self.settings.command_time_limit)
        error = pipe.verdict(command, result)
        if error is not None:
            raise error
        return f"delivered to command: {command}"

    def _forward(self, job: _Job, dests: list[Destination]) -> list[Outcome]:
        """One new message per envelope sender, to all of its new addresses."""
        outcomes: list[Outcome] = []
        by_sender: dict[str, list[Destination]] = {}
        for dest in dests:
            known = self._done.get(dest.key())
            if known is not None:
                outcomes.append(known)
            else:
                by_sender.setdefault(dest.sender, []).append(dest)
        orcpt = job.rcpt.orcpt or f"rfc822;{job.rcpt.address}"
        for sender, group in by_sender.items():
            try:
                new_id = forward.forward(job.msg, [d.value for d in group], sender,
                                         self._delivered_to(job, "forward"),
                                         notify=job.rcpt.notify, orcpt=orcpt, submit=self.submit)
                outcome = Outcome.sent(f"forwarded as {new_id}")
            except DeliveryError as exc:
                outcome = Outcome.failed(exc)
            for dest in group:
                self._log(job.req, dest.value, job.orig, job.started, outcome)
                if len(self._done) < self.settings.duplicate_filter_limit:
                    self._done[dest.key()] = outcome
            outcomes.append(outcome)
        return outcomes

    # -- logging ---------------------------------------------------------------------
    def _log(self, req: DeliveryRequest, to: str, orig: str, started: float,
             outcome: Outcome) -> None:
        arrival = req.arrival or started
        active = req.active_time or arrival
        dispatch = req.dispatch_time or active
        timing = Timing(arrival, active, dispatch, connected=max(started, dispatch),
                        done=time.time())
        log_delivery(req.queue_id, to, orig=orig, relay=RELAY, timing=timing, dsn=outcome.dsn,
                     status=outcome.status, text=outcome.text)
