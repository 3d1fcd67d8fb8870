"""Every conversation between postpy programs: one dataclass per message.

Encoded by :mod:`postpy.ipc.codec`.  Each conversation below lists its
messages in the order they are exchanged; both sides import these classes.

cleanup (``private/cleanup``), client = smtpd, pickup, bounce, local
------------------------------------------------------------------
1. cleanup -> client  :class:`CleanupHello`   the new message's queue ID
2. client  -> cleanup :class:`CleanupEnvelope`
3. client  -> cleanup ``D`` frames with the content (header and body, LF
   line ends, dot-stuffing already undone), then one ``E`` frame
4. cleanup -> client  :class:`CleanupResult`  sent only after the queue
   file and its directory entry are on disk (or the message was refused)

With the envelope attribute ``milter_edits = yes`` (smtpd with
``smtpd_milters``), step 3 is followed by the milters' end-of-message
changes before cleanup finishes the file: client -> cleanup
:class:`CleanupEdits`, then, when ``replace_body``, the new body as ``D``
frames and one ``E`` frame.  cleanup applies them to the file it is
writing (:mod:`postpy.cleanup.milter_edits`), so the file it reports
durable is the filtered message.

A client that closes the connection before ``E`` leaves nothing queued.

delivery (``private/local``, ``private/smtp``, ...), client = qmgr
-------------------------------------------------------------
Persistent connection; repeat: qmgr sends :class:`DeliveryRequest`, the
agent answers :class:`DeliveryResult` with one :class:`RecipientResult`
per recipient.  The agent reads the content from the queue file itself.
qmgr alone records results in the queue file and decides retry/bounce.

bounce (``private/bounce``), client = qmgr
------------------------------------------
:class:`BounceRequest` -> :class:`BounceResult`.  bounce reads the queue
file (reasons are in its ``L`` records) and submits the notice via cleanup.

anvil (``private/anvil``), client = smtpd
-----------------------------------------
Persistent connection; repeat: smtpd sends :class:`AnvilRequest`, anvil
answers :class:`AnvilReply`.  See :mod:`postpy.anvil.service`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.ipc.codec import message

# -- cleanup ------------------------------------------------------------------


@message("cleanup_hello")
@dataclass
class CleanupHello:
    queue_id: str


@message("rcpt")
@dataclass
class Rcpt:
    address: str
    orig: str = ""          # original form, when rewriting changed it
    orcpt: str = ""         # DSN ORCPT, e.g. "rfc822;bob@example.org"
    notify: str = ""        # DSN NOTIFY: "" | "NEVER" | "SUCCESS,DELAY,FAILURE" subset


# Attributes a client may set in CleanupEnvelope.attrs (all strings):
#   origin       smtpd | pickup | bounce | local  (who submits)
#   client_name, client_addr, client_port, helo, protocol (SMTP, ESMTP, ESMTPS, ESMTPA, ...)
#   tls          e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
#   sasl_username, sasl_method
#   envid        DSN ENVID;  ret  FULL | HDRS
#   body         7BIT | 8BITMIME | BINARYMIME;  smtputf8  "yes"
#   uid          submitting uid (pickup, from the kernel)
#   full_name    sendmail -F
#   rewrite      "yes": add missing Message-ID/Date/From (local submission, mynetworks)
#   extract      "yes": take recipients from To/Cc/Bcc (sendmail -t); Bcc is removed
#   log_prefix   e.g. "uid=1000" for pickup's "from=" log line
#   content_filter  transport:nexthop from the receiving service's content_filter
#                (stored in the queue file; qmgr routes every recipient there)
#   overrides    receive_override_options of the receiving service, comma-separated
#                (see postpy.cleanup.overrides; not stored)
#   hold, discard   smtpd's access restrictions said HOLD / DISCARD (the value
#                is the reason, for the log); carried out by cleanup.disposition
#   prepend      JSON list of header lines smtpd's restrictions PREPENDed
#   milter_edits "yes": a CleanupEdits message follows the content (smtpd_milters)
CLEANUP_ATTRS = frozenset({
    "origin", "client_name", "client_addr", "client_port", "helo", "protocol", "tls",
    "sasl_username", "sasl_method", "envid", "ret", "body", "smtputf8", "uid",
    "full_name", "rewrite", "extract", "log_prefix", "content_filter", "overrides",
    "hold", "discard", "prepend", "milter_edits",
})


@message("cleanup_envelope")
@dataclass
class CleanupEnvelope:
    sender: str
    recipients: list[Rcpt]
    attrs: dict[str, str] = field(default_factory=dict)


@message("cleanup_result")
@dataclass
class CleanupResult:
    status: str             # "ok" | "temp" | "perm"
    queue_id: str
    reply: str = ""         # on failure: "X.Y.Z text" for the client's reply
    size: int = 0


@message("header_edit")
@dataclass
class HeaderEdit:
    """One milter header change.  ``op``: "add" (at the end), "insert" (before
    the ``index``-th header the milter saw, 0 = the first) or "change" (the
    ``index``-th ``name`` header, 1-based; an empty value deletes it).
    ``value`` is everything after the colon, LF line ends."""

    op: str
    name: str
    value: str = ""
    index: int = 0


@message("cleanup_edits")
@dataclass
class CleanupEdits:
    headers: list[HeaderEdit] = field(default_factory=list)
    sender: str | None = None           # CHGFROM: the new envelope sender
    add_recipients: list[Rcpt] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    replace_body: bool = False          # the new body follows as D frames + E
    hold: str = ""                      # quarantine: the reason; the file goes to hold/


# -- delivery -----------------------------------------------------------------


@message("delivery_rcpt")
@dataclass
class DeliveryRcpt:
    index: int              # position in the queue file
    address: str
    orig: str = ""
    orcpt: str = ""
    notify: str = ""


@message("delivery_request")
@dataclass
class DeliveryRequest:
    queue_id: str
    queue_name: str         # the queue the file is in (normally "active")
    sender: str
    nexthop: str            # transport's next hop, e.g. "example.org" or "[10.0.0.1]:25"
    recipients: list[DeliveryRcpt]
    arrival: float = 0.0    # when the message arrived (queue file T record)
    active_time: float = 0.0  # when qmgr moved it into the active queue
    dispatch_time: float = 0.0  # when qmgr sent this request
    transport: str = ""     # master.cf service name, e.g. "local", "smtp"


@message("recipient_result")
@dataclass
class RecipientResult:
    index: int
    status: str             # "sent" | "deferred" | "bounced"
    dsn: str                # X.Y.Z
    text: str               # the reason or the remote reply, for logs and DSNs
    relay: str = ""         # e.g. "mx.example.org[192.0.2.1]:25" or "local"
    action: str = ""        # a success's DSN action: "relayed" (pipe without flag X); "" = delivered


@message("delivery_result")
@dataclass
class DeliveryResult:
    queue_id: str
    results: list[RecipientResult]


# -- bounce -------------------------------------------------------------------


@message("bounce_request")
@dataclass
class BounceRequest:
    queue_id: str
    queue_name: str
    kind: str               # "failure" | "delay" | "success"
    indexes: list[int]      # the recipients this notice is about


@message("bounce_result")
@dataclass
class BounceResult:
    status: str             # "ok" | "temp"
    queue_id: str = ""      # of the notice, when one was sent
    text: str = ""


# -- showq (postqueue -p/-j, mailq) ----------------------------------------------
# postqueue connects to public/showq and sends ShowqRequest; showq checks the
# client's uid (SO_PEERCRED) and answers ShowqReply, then, when "ok", one D
# frame per batch of listing lines (postqueue -j JSON, one per message, see
# postpy.mail.queue_listing) and an E frame.


@message("showq_request")
@dataclass
class ShowqRequest:
    format: str = "json"    # the only format: JSON lines; postqueue formats text itself


@message("showq_reply")
@dataclass
class ShowqReply:
    status: str             # "ok" | "denied" | "error"
    text: str = ""          # why not, for postqueue's fatal message


# -- anvil (client counts and rates, Postfix's anvil(8)) ---------------------------
# ident is "service:client_addr".  Requests and the reply fields they fill:
#   connect        count (open connections now), rate (connections this time unit)
#   disconnect     -
#   message, recipient, newtls, auth   rate: such events this time unit, this one included
#   newtls_report  rate: new TLS sessions this time unit, without counting one
#   lookup         count, rate, message, recipient, newtls, auth
ANVIL_REQUESTS = frozenset({"connect", "disconnect", "message", "recipient", "newtls",
                            "newtls_report", "auth", "lookup"})
ANVIL_OK, ANVIL_FAIL = 0, 1


@message("anvil_request")
@dataclass
class AnvilRequest:
    request: str            # one of ANVIL_REQUESTS
    ident: str


@message("anvil_reply")
@dataclass
class AnvilReply:
    status: int             # ANVIL_OK | ANVIL_FAIL (an unknown request)
    count: int = 0
    rate: int = 0
    message: int = 0
    recipient: int = 0
    newtls: int = 0
    auth: int = 0
