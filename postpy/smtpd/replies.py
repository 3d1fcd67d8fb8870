"""Every reply smtpd sends, in one place (RFC 5321 section 4.2, RFC 3463).

Each reply carries a basic code and, except for the greeting and the EHLO
list (RFC 2034 section 3 exempts them), an enhanced status code.  Texts
follow Postfix's smtpd(8) wording so log readers and clients that match on
them keep working.  A :class:`Reply` is data: the session sends it, counts
it as an error when its code is 4xx/5xx, and logs it in reject lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @classmethod
    def of(cls, code: int, *lines: str) -> Reply:
        return cls(code, lines)

    @property
    def text(self) -> str:
        """The (last) line's text without the code, for logs."""
        return self.lines[-1]

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def encode(self) -> bytes:
        last = len(self.lines) - 1
        return "".join(f"{self.code}{' ' if i == last else '-'}{line}\r\n"
                       for i, line in enumerate(self.lines)).encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


R = Reply.of

# -- success ------------------------------------------------------------------
OK = R(250, "2.0.0 Ok")
MAIL_OK = R(250, "2.1.0 Ok")
RCPT_OK = R(250, "2.1.5 Ok")
BYE = R(221, "2.0.0 Bye")
START_DATA = R(354, "End data with <CR><LF>.<CR><LF>")
READY_TLS = R(220, "2.0.0 Ready to start TLS")

# -- syntax and sequence --------------------------------------------------------
BAD_SYNTAX = R(500, "5.5.2 Error: bad syntax")
LINE_TOO_LONG = R(500, "5.5.2 Error: line too long")
UNKNOWN_COMMAND = R(502, "5.5.2 Error: command not recognized")
NOT_IMPLEMENTED = R(502, "5.5.1 Error: command not implemented")
VRFY_DISABLED = R(502, "5.5.1 VRFY command is disabled")
SYNTAX_HELO = R(501, "5.5.4 Syntax: HELO hostname")
SYNTAX_EHLO = R(501, "5.5.4 Syntax: EHLO hostname")
SYNTAX_MAIL = R(501, "5.5.4 Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = R(501, "5.5.4 Syntax: RCPT TO:<address>")
SYNTAX_DATA = R(501, "5.5.4 Syntax: DATA")
SYNTAX_BDAT = R(501, "5.5.4 Syntax: BDAT count [LAST]")
SYNTAX_RSET = R(501, "5.5.4 Syntax: RSET")
SYNTAX_QUIT = R(501, "5.5.4 Syntax: QUIT")
SYNTAX_STARTTLS = R(501, "5.5.4 Syntax: STARTTLS")
SYNTAX_VRFY = R(501, "5.5.4 Syntax: VRFY address")
BAD_SENDER = R(501, "5.1.7 Bad sender address syntax")
BAD_RECIPIENT = R(501, "5.1.3 Bad recipient address syntax")
NESTED_MAIL = R(503, "5.5.1 Error: nested MAIL command")
NEED_MAIL = R(503, "5.5.1 Error: need MAIL command")
NEED_RCPT = R(503, "5.5.1 Error: need RCPT command")
NO_VALID_RCPT = R(554, "5.5.1 Error: no valid recipients")
DATA_AFTER_BDAT = R(503, "5.5.1 Error: DATA and BDAT cannot be mixed in one transaction")
TLS_ACTIVE = R(554, "5.5.1 Error: TLS already active")
TLS_REQUIRED = R(530, "5.7.0 Must issue a STARTTLS command first")
TLS_UNAVAILABLE = R(454, "4.7.0 TLS not available due to local problem")
UTF8_REQUIRED = R(553, "5.6.7 Must declare SMTPUTF8 to send unicode address")
BARE_LF = R(550, "5.5.2 Error: bare <LF> received")

# -- limits and resources ----------------------------------------------------------
TOO_MANY_RCPTS = R(452, "4.5.3 Error: too many recipients")
TOO_BIG = R(552, "5.3.4 Message size exceeds fixed limit")
NO_STORAGE = R(452, "4.3.1 Insufficient system storage")
WRITE_ERROR = R(451, "4.3.0 Error: queue file write error")
CONFIG_ERROR = R(451, "4.3.5 Server configuration error")


def unsupported_option(name: str) -> Reply:
    return R(555, f"5.5.4 Unsupported option: {name}")


def bad_parameter(text: str) -> Reply:
    return R(501, f"5.5.4 {text}")


def greeting(banner: str) -> Reply:
    return R(220, banner)


def helo_ok(hostname: str) -> Reply:
    return R(250, hostname)


def ehlo_ok(hostname: str, keywords: list[str]) -> Reply:
    return Reply(250, (hostname, *keywords))


def help_text(commands: list[str]) -> Reply:
    return R(214, f"2.0.0 Commands: {' '.join(commands)}")


def vrfy_ok(address: str) -> Reply:
    return R(252, f"2.0.0 {address}")


def queued(queue_id: str) -> Reply:
    return R(250, f"2.0.0 Ok: queued as {queue_id}")


def chunk_ok(size: int) -> Reply:
    return R(250, f"2.0.0 Ok: {size} bytes")


def shutting_down(hostname: str) -> Reply:
    return R(421, f"4.3.2 {hostname} Service shutting down, closing transmission channel")


def timeout(hostname: str) -> Reply:
    return R(421, f"4.4.2 {hostname} Error: timeout exceeded")


def too_many_errors(hostname: str) -> Reply:
    return R(421, f"4.7.0 {hostname} Error: too many errors")


def too_many_connections(hostname: str, addr: str) -> Reply:
    return R(421, f"4.7.0 {hostname} Error: too many connections from {addr}")


def too_much_mail(addr: str) -> Reply:
    return R(450, f"4.7.1 Error: too much mail from {addr}")


def too_many_recipients_from(addr: str) -> Reply:
    return R(450, f"4.7.1 Error: too many recipients from {addr}")


def too_many_auth(addr: str) -> Reply:
    return R(450, f"4.7.1 Error: too many AUTH commands from {addr}")


def too_many_new_tls(client: str) -> Reply:
    return R(454, f"4.7.0 Error: too many new TLS sessions from {client}")


PREGREET_REFUSED = R(554, "5.5.1 Error: protocol error: talking before the greeting")


def forbidden_command(hostname: str) -> Reply:
    return R(421, f"4.7.0 {hostname} Error: I can break rules, too. Goodbye.")


def internal_error(hostname: str) -> Reply:
    return R(421, f"4.3.0 {hostname} Error: internal server error, closing connection")


def relay_denied(address: str) -> Reply:
    return R(554, f"5.7.1 <{address}>: Relay access denied")


def access_denied(address: str) -> Reply:
    return R(554, f"5.7.1 <{address}>: Recipient address rejected: Access denied")


def user_unknown(address: str) -> Reply:
    return R(550, f"5.1.1 <{address}>: Recipient address rejected: "
                  "User unknown in local recipient table")


def user_unknown_in(address: str, table: str) -> Reply:
    """An unknown recipient of a virtual mailbox or relay domain (``table``
    names the table, as Postfix's show_user_unknown_table_name does)."""
    return R(550, f"5.1.1 <{address}>: Recipient address rejected: User unknown in {table}")


def recipient_rejected(address: str, dsn: str, text: str) -> Reply:
    """550 with a reason of the recipient's own, e.g. relocated_maps'
    ``5.1.6 ... User has moved to NEWADDR``."""
    return R(550, f"{dsn} <{address}>: Recipient address rejected: {text}")


def lookup_failure(address: str) -> Reply:
    return R(451, f"4.3.0 <{address}>: Temporary lookup failure")


def from_cleanup(status: str, dsn_text: str) -> Reply:
    """The client's reply for a message cleanup refused: ``dsn_text`` is
    ``X.Y.Z text`` as cleanup gave it (empty: a generic text)."""
    dsn, _, text = dsn_text.partition(" ")
    if status == "temp":
        if not dsn.startswith("4."):
            return WRITE_ERROR
        return R(452 if dsn == "4.3.1" else 451, f"{dsn} {text or 'Error: queue file write error'}")
    if not dsn.startswith("5."):
        dsn, text = "5.3.0", dsn_text or "Error: message not accepted"
    # Content refused by policy (header/body checks: 5.7.x) is 550, as Postfix answers.
    code = 550 if dsn.startswith("5.7.") else {"5.3.4": 552, "5.1.0": 550}.get(dsn, 554)
    return R(code, f"{dsn} {text or 'Error: message not accepted'}")
