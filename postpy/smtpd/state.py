"""The data an SMTP session keeps: who the client is, the open transaction.

Plain dataclasses shared by the command modules (session, envelope,
transfer), kept apart so that none of them needs to import another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.ipc.messages import Rcpt
from postpy.smtpd.commands import MailParams
from postpy.smtpd.data import CrlfDecoder
from postpy.smtpd.handoff import Handoff
from postpy.smtpd.peername import PeerName
from postpy.smtpd.replies import Reply
from postpy.smtpd.verdict import MessageActions


@dataclass
class Client:
    name: str               # the verified host name, or "unknown"
    addr: str
    port: str = ""
    server_addr: str = ""   # the address the client connected to
    server_port: str = ""
    trusted: bool = False   # in mynetworks
    peer: PeerName = field(default_factory=PeerName)   # names and lookup status

    @property
    def label(self) -> str:
        return f"{self.name}[{self.addr}]"


@dataclass
class BdatState:
    """A message arriving in BDAT chunks (RFC 3030)."""

    handoff: Handoff
    decoder: CrlfDecoder = field(default_factory=CrlfDecoder)
    size: int = 0                   # content bytes so far (LF line ends)
    failure: Reply | None = None    # once set, the rest is read and dropped

    def abort(self) -> None:
        self.handoff.abort()


@dataclass
class Transaction:
    sender: str | None = None               # None until MAIL; "" is the null sender
    mail: MailParams = field(default_factory=MailParams)
    recipients: list[Rcpt] = field(default_factory=list)
    rcpt_tried: int = 0
    bdat: BdatState | None = None
    actions: MessageActions = field(default_factory=MessageActions)   # HOLD, FILTER, ...
