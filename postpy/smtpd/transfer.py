"""DATA and BDAT: move the message content from the client to cleanup.

Both open the cleanup conversation (:mod:`postpy.smtpd.handoff`) with the
envelope, stream the content while the client sends it, and answer
``250 2.0.0 Ok: queued as ID`` only after cleanup reported the queue file
durable.  Whatever goes wrong (too large, bare LF under the ``reject``
policy, cleanup trouble, the client vanishing) aborts the handoff, so
nothing is queued, and a message is never half accepted.

DATA (RFC 5321 section 4.1.1.4): ``354``, then the content up to
``<CR><LF>.<CR><LF>`` as read by :class:`postpy.smtpd.data.DotReader`.  A
problem found mid-way does not stop the reading: the rest of the content
is read and dropped, so what follows the end marker is taken as commands
exactly as the client meant it, and only then the error is sent.

Restrictions: ``smtpd_data_restrictions`` run at DATA (and at the first
BDAT), before the cleanup conversation opens; ``smtpd_end_of_data_restrictions``
after the last byte, before cleanup is told to finish (a refusal aborts
the message, DISCARD drops it and answers as if queued).  The message
actions collected from the restrictions go with the envelope
(:func:`build_envelope`): FILTER as ``content_filter``, REDIRECT as the only
recipient (and no filter), BCC as an extra recipient with NOTIFY=NEVER,
HOLD, DISCARD and PREPEND as the cleanup attributes ``hold``, ``discard``
and ``prepend`` (:mod:`postpy.cleanup.disposition` carries them out).

Milters (``smtpd_milters``, :mod:`postpy.smtpd.milters`): DATA (or the
first BDAT) is sent to them once the cleanup conversation is open, the
content as it streams, end of message before cleanup is told to finish;
their changes go to cleanup with the ``E`` frame (:meth:`Handoff.finish`).

BDAT (RFC 3030): each ``BDAT n`` is followed by exactly n bytes, which are
always read, even when the command is refused (the client does not wait
for a reply before sending them).  After a failed chunk, the following
chunks of the same message get the same error; ``BDAT n LAST`` ends the
transaction either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postpy.cleanup import overrides
from postpy.ipc.messages import CleanupEnvelope, Rcpt
from postpy.smtpd import events, milters, replies, tls
from postpy.smtpd.commands import CommandError, parse_bdat
from postpy.smtpd.data import DotReader
from postpy.smtpd.handoff import Handoff, HandoffError
from postpy.smtpd.replies import Reply
from postpy.smtpd.restrictions import encode_actions
from postpy.smtpd.state import BdatState
from postpy.smtpd.verdict import MessageActions
from postpy.util import maillog

if TYPE_CHECKING:
    from postpy.smtpd.session import Session


def build_envelope(s: Session) -> CleanupEnvelope:
    client, mail = s.client, s.txn.mail
    actions = MessageActions()
    actions.merge(s.actions)
    actions.merge(s.txn.actions)
    recipients = list(s.txn.recipients)
    content_filter = actions.filter or s.settings.content_filter
    if actions.redirect:
        recipients, content_filter = [Rcpt(address=actions.redirect)], ""
    for address in actions.bcc:
        if all(r.address != address for r in recipients):
            recipients.append(Rcpt(address=address, notify="NEVER"))
    attrs = {
        "origin": "smtpd", "client_name": client.name, "client_addr": client.addr,
        "client_port": client.port, "helo": s.helo, "protocol": s.protocol,
        "tls": tls.describe(s.channel.tls_object()) if s.channel.tls_active else "",
        "envid": mail.envid, "ret": mail.ret, "body": mail.body,
        "smtputf8": "yes" if mail.smtputf8 else "",
        "sasl_method": s.sasl_method, "sasl_username": s.sasl_username,
        "content_filter": content_filter,
        "overrides": overrides.attribute(s.settings.overrides),
        "milter_edits": "yes" if s.milters is not None else "",
        # A mail client's submission gets Message-ID/Date added when missing.
        "rewrite": "yes" if s.settings.rewrite_all or s.sasl_username or (
            s.settings.rewrite_mynetworks and client.trusted) else "",
    }
    attrs.update(encode_actions(actions))
    return CleanupEnvelope(sender=s.txn.sender or "", recipients=recipients,
                           attrs={k: v for k, v in attrs.items() if v})


def _precheck(s: Session) -> Reply | None:
    """Is there a transaction with recipients to send content for?"""
    if s.txn.sender is None:
        return replies.NEED_RCPT
    if not s.txn.recipients:
        return replies.NO_VALID_RCPT if s.txn.rcpt_tried else replies.NEED_RCPT
    return None


async def _data_restrictions(s: Session) -> Reply | None:
    result = await s.settings.rules().data(s.request("DATA"))
    refused = s.restrict("DATA", result)
    if refused is None:
        s.txn.actions.merge(result.actions)
    return refused


async def _end_of_data(s: Session, handoff: Handoff, size: int) -> Reply | None:
    """smtpd_end_of_data_restrictions; a refusal or a DISCARD aborts the handoff."""
    result = await s.settings.rules().end_of_data(
        s.request("END-OF-MESSAGE", size=size, queue_id=handoff.queue_id))
    refused = s.restrict("END-OF-MESSAGE", result, queue_id=handoff.queue_id)
    if refused is not None:
        handoff.abort()
        return refused
    actions = result.actions
    if actions.discard:
        handoff.abort()
        return replies.queued(handoff.queue_id)
    if actions:
        maillog.warning(f"{handoff.queue_id}: HOLD, FILTER, REDIRECT, BCC and PREPEND are not "
                        "supported in smtpd_end_of_data_restrictions: ignored")
    return None


async def _open(s: Session) -> Handoff | Reply:
    cfg = s.settings
    try:
        handoff = await Handoff.open(cfg.cleanup_path, build_envelope(s),
                                     timeout=cfg.ipc_timeout, max_frame=cfg.ipc_max_frame)
    except HandoffError as exc:
        maillog.warning(str(exc))
        return replies.WRITE_ERROR
    events.client_line(handoff.queue_id, s.client.label, s.sasl_method, s.sasl_username)
    return handoff


async def _finish(s: Session, handoff: Handoff) -> Reply:
    verdict = await milters.end_of_message(s, handoff)
    if isinstance(verdict, Reply):
        return verdict
    try:
        if verdict is None:
            result = await handoff.finish()
        else:
            body = bytes(verdict.body) if verdict.body is not None else None
            result = await handoff.finish(verdict.message(), body)
    except HandoffError as exc:
        maillog.warning(str(exc))
        return replies.WRITE_ERROR
    if result.status == "ok":
        return replies.queued(result.queue_id or handoff.queue_id)
    reply = replies.from_cleanup(result.status, result.reply)
    s.log_reject("END-OF-MESSAGE", reply, queue_id=handoff.queue_id)
    return reply


def _too_big(s: Session, size: int) -> bool:
    limit = s.settings.message_size_limit
    return bool(limit) and size > limit


async def data_cmd(s: Session, arg: str) -> Reply:
    if arg.strip():
        return replies.SYNTAX_DATA
    if s.txn.bdat is not None:
        return replies.DATA_AFTER_BDAT
    problem = _precheck(s)
    if problem is not None:
        return problem
    refused = await _data_restrictions(s)
    if refused is not None:
        return refused
    opened = await _open(s)
    if isinstance(opened, Reply):
        return opened
    handoff = opened
    refused = await milters.data(s, handoff)
    if refused is not None:
        return refused
    s.send(replies.START_DATA)
    reader = DotReader(s.settings.line_length_limit)
    failure: Reply | None = None
    try:
        while not reader.done:
            content = reader.feed(await s.channel.read_chunk())
            if failure is not None or not content:
                continue
            if _too_big(s, handoff.size + len(content)):
                failure = replies.TOO_BIG
                handoff.abort()
                continue
            try:
                await handoff.write(content)
            except HandoffError as exc:
                maillog.warning(str(exc))
                failure = replies.WRITE_ERROR
            await milters.content(s, content)
    except BaseException:
        handoff.abort()
        s.after = f"DATA ({reader.received} bytes)"
        raise
    s.channel.unread(reader.rest)
    s.after = "END-OF-MESSAGE"
    if failure is None and reader.bare_lf and s.reject_bare_lf:
        failure = replies.BARE_LF
    if failure is not None:
        handoff.abort()
        s.log_reject("END-OF-MESSAGE", failure, queue_id=handoff.queue_id)
        s.reset()
        return failure
    refused = await _end_of_data(s, handoff, handoff.size)
    reply = refused if refused is not None else await _finish(s, handoff)
    s.reset()
    return reply


async def bdat_cmd(s: Session, arg: str) -> Reply:
    try:
        size, last = parse_bdat(arg)
    except CommandError as exc:
        return exc.reply    # the size is unknown, so nothing can be skipped
    state = s.txn.bdat
    refused: Reply | None = None
    if state is None:
        refused = _precheck(s)
        if refused is None:
            refused = await _data_restrictions(s)
        if refused is None:
            opened = await _open(s)
            if isinstance(opened, Reply):
                refused = opened
            else:
                refused = await milters.data(s, opened)
                if refused is None:
                    state = s.txn.bdat = BdatState(opened)
    elif state.failure is not None:
        refused = state.failure
    s.after = "BDAT"
    async for piece in s.channel.read_counted(size):
        if refused is not None or state is None or state.failure is not None:
            continue
        content = state.decoder.feed(piece)
        state.size += len(content)
        if _too_big(s, state.size):
            state.failure = replies.TOO_BIG
            state.abort()
            continue
        try:
            await state.handoff.write(content)
        except HandoffError as exc:
            maillog.warning(str(exc))
            state.failure = replies.WRITE_ERROR
        await milters.content(s, content)
    if refused is None and state is not None and state.failure is None and last:
        tail = state.decoder.finish()
        state.size += len(tail)
        if tail:
            try:
                await state.handoff.write(tail)
            except HandoffError as exc:
                maillog.warning(str(exc))
                state.failure = replies.WRITE_ERROR
            await milters.content(s, tail)
    if refused is None and state is not None and state.failure is not None:
        refused = state.failure
        if last:
            s.log_reject("END-OF-MESSAGE", refused, queue_id=state.handoff.queue_id)
    if refused is not None:
        if last:
            s.reset()
        return refused
    assert state is not None
    if not last:
        return replies.chunk_ok(size)
    s.after = "END-OF-MESSAGE"
    refused = await _end_of_data(s, state.handoff, state.size)
    reply = refused if refused is not None else await _finish(s, state.handoff)
    s.txn.bdat = None
    s.reset()
    return reply
