"""MAIL FROM and RCPT TO: the envelope of one mail transaction.

MAIL (RFC 5321 section 4.1.1.2) starts a transaction after these checks,
in order: no transaction open (503), STARTTLS done when
``smtpd_tls_security_level = encrypt`` (530), syntax and parameters
(501/555, see :mod:`postpy.smtpd.commands`), a non-ASCII address only with
SMTPUTF8 (553, RFC 6531 section 3.4), ``SIZE`` within
``message_size_limit`` (552, RFC 1870), and enough free space in the queue
file system (452 4.3.1, :func:`storage_refused`: Postfix's rule).

With ``smtpd_helo_required = yes`` MAIL first needs HELO/EHLO (503); with
``smtpd_delay_reject = no`` the sender restrictions run at MAIL.

RCPT (section 4.1.1.3) adds one recipient after: a transaction open (503),
syntax and DSN parameters, SMTPUTF8, ``smtpd_recipient_limit`` (452), then
the restrictions of :mod:`postpy.smtpd.restrictions` (client, HELO and
sender lists when delayed, relay and recipient lists) and the local
recipient validation of :mod:`postpy.smtpd.relay`.  Policy rejects are
logged as ``NOQUEUE: reject: RCPT from ...`` lines; what the restrictions
ask of the message (HOLD, FILTER, ...) is kept with the transaction.
Then MAIL and RCPT go to the milters (:mod:`postpy.smtpd.milters`), whose
refusal is the command's reply.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from postpy.ipc.messages import Rcpt
from postpy.smtpd import limits, milters, replies
from postpy.smtpd.commands import CommandError, mail_params, parse_mail, parse_rcpt, rcpt_params
from postpy.smtpd.replies import Reply
from postpy.smtpd.state import Transaction

if TYPE_CHECKING:
    from postpy.smtpd.session import Session


def storage_refused(free: int, minfree: int, size_limit: int, size: int) -> bool:
    """Refuse MAIL for want of queue space (all in bytes), as Postfix does:
    when ``free`` is at most ``queue_minfree``; below 1.5 times
    ``message_size_limit`` (0: no limit), so that the largest message fits
    with room to spare; and, for a declared ``SIZE``, when the message would
    eat into ``queue_minfree`` or take half of what is free."""
    if free <= minfree:
        return True
    if size_limit > 0 and 2 * free < 3 * size_limit:
        return True
    return size > 0 and (size > free - minfree or 2 * size >= free)


def enough_space(path: str, minfree: int, size_limit: int, size: int) -> bool:
    """Is the queue file system at ``path`` roomy enough (:func:`storage_refused`)?"""
    try:
        st = os.statvfs(path)
    except OSError:
        return True     # cannot tell: let cleanup find out
    return not storage_refused(st.f_bavail * st.f_frsize, minfree, size_limit, size)


def esmtp_args(params: dict[str, str | None]) -> list[str]:
    """MAIL/RCPT parameters as the milter protocol carries them (``SIZE=123``)."""
    return [k if v is None else f"{k}={v}" for k, v in params.items()]


async def mail_cmd(s: Session, arg: str) -> Reply:
    if s.txn.sender is not None:
        return replies.NESTED_MAIL
    if s.settings.tls_level == "encrypt" and not s.channel.tls_active:
        s.log_reject("MAIL", replies.TLS_REQUIRED)
        return replies.TLS_REQUIRED
    too_fast = await limits.message(s)      # smtpd_client_message_rate_limit (anvil)
    if too_fast is not None:
        return too_fast
    try:
        path = parse_mail(arg)
        params = mail_params(path.params, smtputf8_enable=s.settings.smtputf8_enable,
                             auth_enable=s.settings.sasl is not None)
    except CommandError as exc:
        return exc.reply
    if not params.smtputf8 and not path.address.isascii():
        return replies.UTF8_REQUIRED
    rules = s.settings.rules()
    if rules.cfg.helo_required and not s.helo:
        reply = replies.R(503, "5.5.1 Error: send HELO/EHLO first")
        s.log_reject("MAIL", reply)
        return reply
    limit = s.settings.message_size_limit
    if params.size is not None and limit and params.size > limit:
        s.log_reject("MAIL", replies.TOO_BIG)
        return replies.TOO_BIG
    if not enough_space(s.settings.queue_path, s.settings.queue_minfree, limit, params.size or 0):
        s.log_reject("MAIL", replies.NO_STORAGE)
        return replies.NO_STORAGE
    s.txn = Transaction(sender=path.address, mail=params)
    result = await rules.mail(s.request("MAIL"))
    refused = s.restrict("MAIL", result)
    if refused is not None:
        s.txn = Transaction()
        return refused
    if result is not None:
        s.txn.actions.merge(result.actions)
    refused = await milters.mail(s, path.address, esmtp_args(path.params))
    if refused is not None:
        s.txn = Transaction()
        return refused
    return replies.MAIL_OK


async def rcpt_cmd(s: Session, arg: str) -> Reply:
    txn = s.txn
    if txn.sender is None:
        return replies.NEED_MAIL
    if txn.bdat is not None:
        return replies.R(503, "5.5.1 Error: RCPT not allowed during BDAT transfer")
    too_fast = await limits.recipient(s)    # smtpd_client_recipient_rate_limit (anvil)
    if too_fast is not None:
        return too_fast
    txn.rcpt_tried += 1
    try:
        path = parse_rcpt(arg)
        params = rcpt_params(path.params)
    except CommandError as exc:
        return exc.reply
    if not txn.mail.smtputf8 and not path.address.isascii():
        return replies.UTF8_REQUIRED
    if len(txn.recipients) >= s.settings.recipient_limit:
        return replies.TOO_MANY_RCPTS
    result = await s.settings.rules().rcpt(s.request("RCPT", path.written, path.address))
    refused = s.restrict("RCPT", result, recipient=path.written)
    if refused is not None:
        return refused
    refused = await milters.rcpt(s, path.written, path.address, esmtp_args(path.params))
    if refused is not None:
        return refused
    txn.actions.merge(result.actions)
    txn.recipients.append(Rcpt(address=path.address, orcpt=params.orcpt, notify=params.notify))
    return replies.RCPT_OK
