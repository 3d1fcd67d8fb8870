"""Delivery failures of the smtp client, as data.

Every problem the client meets (a DNS answer, a refused connection, a
server reply, a timeout) is raised as :class:`DeliveryFailure` carrying an
RFC 3463 status code and the text that goes into the log and the DSN.  The
class of the code decides the outcome: ``4.x.x`` is deferred, ``5.x.x``
bounced.  :mod:`postpy.smtp.delivery` is the one place that turns failures
and replies into :class:`postpy.ipc.messages.RecipientResult` records; qmgr
alone decides what happens next.
"""

from __future__ import annotations


class DeliveryFailure(Exception):
    """A temporary (4.x.x) or permanent (5.x.x) failure with its reason.

    ``next_host``: the problem concerns this server only, so the client
    may try the next MX host before it gives up (connection failures, a
    4xx greeting, a TLS failure).
    """

    def __init__(self, dsn: str, text: str, *, next_host: bool = False) -> None:
        super().__init__(text)
        if dsn[:1] not in ("4", "5"):
            raise ValueError(f"failure with non-failure status {dsn}: {text}")
        self.dsn = dsn
        self.text = text
        self.next_host = next_host
        self.relay = ""          # host[addr]:port once a server was reached (for the log)

    @property
    def permanent(self) -> bool:
        return self.dsn.startswith("5")

    @property
    def status(self) -> str:
        """The RecipientResult status this failure means."""
        return "bounced" if self.permanent else "deferred"

    def __repr__(self) -> str:
        return f"DeliveryFailure({self.dsn!r}, {self.text!r}, next_host={self.next_host})"


def temporary(text: str, dsn: str = "4.4.2", *, next_host: bool = True) -> DeliveryFailure:
    return DeliveryFailure(dsn, text, next_host=next_host)


def permanent(text: str, dsn: str = "5.0.0") -> DeliveryFailure:
    return DeliveryFailure(dsn, text)
