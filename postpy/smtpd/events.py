"""smtpd's log lines, one function per event, in Postfix's shape.

Log lines are an interface (pflogsumm, fail2ban filters, our tests), so
each shape is written once, here::

    connect from localhost[127.0.0.1]
    ID: client=localhost[127.0.0.1]
    ID: client=unknown[192.0.2.7], sasl_method=PLAIN, sasl_username=alice
    NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>
    NOQUEUE: hold: RCPT from unknown[192.0.2.9]: <x@y>: Recipient address triggers HOLD action; from=<a@b> to=<x@y> proto=ESMTP helo=<h>
    lost connection after DATA (1234 bytes) from localhost[127.0.0.1]
    timeout after RCPT from localhost[127.0.0.1]
    too many errors after RCPT from localhost[127.0.0.1]
    disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4

The disconnect line lists, in a fixed order, only the commands the client
used: ``name=N`` when all succeeded, ``name=ok/N`` otherwise; a client that
sent no command at all gets ``commands=0/0``.
"""

from __future__ import annotations

from postpy.smtpd.replies import Reply
from postpy.util import maillog

COMMAND_ORDER = ("helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat",
                 "rset", "noop", "vrfy", "help", "etrn", "quit", "unknown")


def connect(client: str) -> None:
    maillog.info(f"connect from {client}")


def client_line(queue_id: str, client: str, sasl_method: str = "", sasl_username: str = "") -> None:
    sasl = f", sasl_method={sasl_method}, sasl_username={sasl_username}" if sasl_username else ""
    maillog.info(f"{queue_id}: client={client}{sasl}")


def reject(stage: str, client: str, reply: Reply, *, queue_id: str = "NOQUEUE",
           sender: str | None = None, recipient: str | None = None,
           proto: str = "", helo: str = "") -> None:
    restriction("reject", stage, client, f"{reply.code} {reply.text}", queue_id=queue_id,
                sender=sender, recipient=recipient, proto=proto, helo=helo)


def restriction(action: str, stage: str, client: str, text: str, *, queue_id: str = "NOQUEUE",
                sender: str | None = None, recipient: str | None = None,
                proto: str = "", helo: str = "") -> None:
    """``NOQUEUE: ACTION: STAGE from CLIENT: TEXT; from=<> to=<> proto=P helo=<h>``,
    for reject, reject_warning, warn, info, hold, discard, filter, redirect, bcc."""
    fields = []
    if sender is not None:
        fields.append(f"from=<{sender}>")
    if recipient is not None:
        fields.append(f"to=<{recipient}>")
    if proto:
        fields.append(f"proto={proto}")
    if helo:
        fields.append(f"helo=<{helo}>")
    maillog.info(f"{queue_id}: {action}: {stage} from {client}: {text}; " + " ".join(fields))


def lost_connection(after: str, client: str) -> None:
    maillog.info(f"lost connection after {after} from {client}")


def shutting_down(after: str, client: str) -> None:
    maillog.info(f"shutting down after {after} from {client}")


def timeout(after: str, client: str) -> None:
    maillog.info(f"timeout after {after} from {client}")


def too_many_errors(after: str, client: str) -> None:
    maillog.info(f"too many errors after {after} from {client}")


def tls_established(client: str, description: str) -> None:
    maillog.info(f"Anonymous TLS connection established from {client}: {description}")


def tls_failed(client: str, text: str) -> None:
    maillog.info(f"SSL_accept error from {client}: {text}")


def too_many_connections(client: str, count: int, service: str) -> None:
    maillog.warning(f"Connection concurrency limit exceeded: {count} from {client} "
                    f"for service {service}")


def limit_exceeded(what: str, count: int, client: str, service: str) -> None:
    """``warning: Connection rate limit exceeded: 3 from NAME[ADDR] for service SERVICE``;
    ``what`` is "Connection rate", "Message delivery request rate", ... (smtpd.limits)."""
    maillog.warning(f"{what} limit exceeded: {count} from {client} for service {service}")


def pregreet(count: int, seconds: float, addr: str, port: str, text: str) -> None:
    """postscreen's ``PREGREET 11 after 0.05 from [ADDR]:PORT: EHLO x\\r\\n``."""
    maillog.info(f"PREGREET {count} after {seconds:.2f} from [{addr}]:{port}: {text}")


def disconnect(client: str, counts: dict[str, list[int]]) -> None:
    """``counts`` maps a command name to [succeeded, total]."""
    parts = []
    ok_all = total_all = 0
    for name in COMMAND_ORDER:
        if name not in counts:
            continue
        ok, total = counts[name]
        ok_all += ok
        total_all += total
        parts.append(f"{name}={total}" if ok == total else f"{name}={ok}/{total}")
    # A client that sent nothing shows as "commands=0/0", as in Postfix.
    parts.append(f"commands={total_all}" if ok_all == total_all and total_all
                 else f"commands={ok_all}/{total_all}")
    maillog.info(f"disconnect from {client} " + " ".join(parts))
