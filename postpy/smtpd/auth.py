"""The AUTH command in an SMTP session (RFC 4954).

The dialogue itself (mechanisms, backend, failure delay and cut-off, the
replies and their log lines) is :mod:`postpy.sasl.server`; this module
connects it to the session: it describes the session's state, sends each
``334`` challenge and reads the answer through the session's channel, and
on success records the login.  From then on the session's protocol is
ESMTPA (ESMTPSA under TLS), ``permit_sasl_authenticated`` matches, the
sender login checks know the user, and each message's ``client=`` log line
and cleanup attributes carry ``sasl_method`` and ``sasl_username``.

When SMTP AUTH is not enabled for the service the command gets
``503 5.5.1 Error: authentication not enabled``; under
``smtpd_tls_security_level = encrypt`` it needs STARTTLS first (530), as
MAIL does.  A STARTTLS after a successful AUTH forgets the login (RFC 4954
section 4, RFC 3207 section 4.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postpy.sasl.backend import ClientInfo
from postpy.sasl.server import NOT_ENABLED, SessionFacts
from postpy.smtpd import limits, replies
from postpy.smtpd.commands import decode_line
from postpy.smtpd.replies import Reply

if TYPE_CHECKING:
    from postpy.smtpd.session import Session


class ChannelExchange:
    """Send ``334 challenge`` and read one response line from the client."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def challenge(self, data: str) -> str | None:
        channel = self.session.channel
        channel.reply(Reply.of(334, data))
        line = await channel.read_line(self.session.settings.command_line_limit)
        if line is None:
            return None
        return decode_line(line.rstrip(b"\r\n"))


def facts(s: Session) -> SessionFacts:
    client = s.client
    info = ClientInfo(addr=client.addr, port=client.port, server_addr=client.server_addr,
                      tls=s.channel.tls_active)
    return SessionFacts(client=info, label=client.label, hostname=s.settings.hostname,
                        ehlo=s.esmtp, tls_active=s.channel.tls_active,
                        authenticated=bool(s.sasl_username),
                        in_transaction=s.txn.sender is not None)


async def auth_cmd(s: Session, arg: str) -> Reply:
    sasl = s.settings.sasl
    if sasl is None:
        return Reply.of(NOT_ENABLED.code, NOT_ENABLED.text)
    if s.settings.tls_level == "encrypt" and not s.channel.tls_active:
        return replies.TLS_REQUIRED
    too_fast = await limits.auth(s)         # smtpd_client_auth_rate_limit (anvil)
    if too_fast is not None:
        return too_fast
    outcome = await sasl.auth(arg, facts(s), ChannelExchange(s))
    if outcome.ok:
        s.sasl_username, s.sasl_method = outcome.username, outcome.method
    if outcome.reply.close:
        s.quit = True
    return Reply.of(outcome.reply.code, outcome.reply.text)
