"""Pre-greeting test, in the spirit of Postfix's postscreen(8), inside smtpd.

With ``smtpd_pregreet_delay`` above 0, smtpd waits that long after the
connection before its 220 greeting.  An SMTP client must wait for the
greeting (RFC 5321 section 4.3.1); spambots often talk at once.  A client
that sends anything in that time is logged as postscreen does::

    PREGREET 11 after 0.05 from [192.0.2.7]:41234: EHLO bot\\r\\n

and treated by ``smtpd_pregreet_action``:

- ``ignore``: what it sent is dropped and the session goes on (it must
  send its commands again after the greeting);
- ``log``: what it sent is kept and read as its first commands;
- ``enforce``: ``554 5.5.1`` instead of the greeting, and the connection is
  closed.

Every client is tested (also mynetworks), except under
``smtpd_tls_wrappermode`` (the client speaks TLS first).  The delay costs
every session that much time, so keep it short (postscreen's default
greeting wait is 6 s).
"""

from __future__ import annotations

import asyncio
import time

from postpy.smtpd import events, replies
from postpy.smtpd.channel import Channel
from postpy.smtpd.replies import Reply
from postpy.smtpd.state import Client

ACTIONS = ("ignore", "log", "enforce")
_SHOWN = 100        # bytes of the early text shown in the log line


def printable(data: bytes) -> str:
    """The client's bytes for the log: CR, LF and other controls escaped."""
    out = []
    for byte in data[:_SHOWN]:
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 else {"\r": "\\r", "\n": "\\n"}.get(ch, f"\\x{byte:02x}"))
    return "".join(out)


async def test(channel: Channel, client: Client, delay: float, action: str) -> Reply | None:
    """Wait ``delay`` seconds for the client to stay silent; a refusal, or None to greet."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(delay):
            data = await channel.reader.read(65536)
    except TimeoutError:
        return None
    except (ConnectionError, OSError):
        return None           # the session finds out (lost connection after CONNECT)
    if not data:
        return None
    events.pregreet(len(data), time.monotonic() - started, client.addr, client.port, printable(data))
    if action == "enforce":
        return replies.PREGREET_REFUSED
    if action == "log":
        channel.buf += data
    return None
