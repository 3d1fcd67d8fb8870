"""cleanup: header_checks, mime_header_checks, nested_header_checks, body_checks.

One job: look up each header and body line of a message being received in
the check tables and say what to do with the line and with the message
(header_checks(5)).  :mod:`postpy.cleanup.session` calls
:meth:`ContentChecks.check_headers` with the primary header block before
any other processing, passes every body chunk through
:meth:`ContentChecks.body` (the bytes it returns are stored instead), and
:mod:`postpy.cleanup.disposition` carries out the verdict at the end.

Which table sees what (the body is cut by :mod:`postpy.cleanup.mime_scan`):

- ``header_checks``: the primary headers, except MIME headers
  (``Content-*``, ``MIME-Version``), which go to ``mime_header_checks``;
- ``mime_header_checks``: those, and every header of a MIME part;
- ``nested_header_checks``: the headers of attached messages
  (message/rfc822), except MIME headers;
- ``body_checks``: every other line, boundaries included, at most
  ``line_length_limit`` bytes at a time and the first
  ``body_checks_size_limit`` bytes of each body segment.

A folded header is looked up as one string: its lines joined by ``\\n``
(the continuation keeps its leading white space), without the final line
break.  Empty lines never match.  Headers cleanup adds itself are not
checked; headers it removes (Bcc:) are checked first.

Actions (the first word of the result, case-insensitive), logged as
Postfix's cleanup logs them
(``ID: reject: header Subject: x from host[addr]; from=<s> to=<r>
proto=ESMTP helo=<h>: 5.7.1 text``; ``from local`` for local mail):

==========  ============================================================
REJECT t    refuse the message: ``5.7.1 t`` (t may start with its own
            4.x.x or 5.x.x code; no t: ``5.7.1 Message content
            rejected``); inspection stops
DISCARD t   accept, then drop the message; inspection stops
HOLD t      the message goes to hold/ instead of incoming/
REDIRECT a  every recipient is replaced by ``a`` (needs an ``@``); also
            cancels FILTER and any content_filter
FILTER t:d  route the message to transport t, next hop d (content_filter)
BCC a       add the recipient ``a`` (NOTIFY=NEVER)
WARN t      log ``warning: ...``;  INFO t: log ``info: ...``
IGNORE      delete the line;  STRIP t: delete it and log ``strip: ...``
PREPEND t   add the line t before this one (a header needs ``name:``)
REPLACE t   put t in place of this line (a header needs ``name:``)
PASS t      log ``pass: ...`` and stop inspecting this message
DUNNO, OK   nothing
==========  ============================================================

Mail that cleanup makes itself or passes on (``origin`` bounce or local)
is not inspected, nor mail whose receiving service has
``receive_override_options = no_header_body_checks``.  A table that cannot
be read defers the message (``4.3.5 Server configuration error``) and
names the table in the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postpy.cleanup.envelope import CheckedEnvelope, Refusal, add_recipient
from postpy.cleanup.mime_scan import HEADER, NESTED, RAW, MimeScanner, Piece
from postpy.cleanup.overrides import Overrides
from postpy.config.maincf import Config
from postpy.mail.headers import Header, header_name
from postpy.qmgr.filter import ATTRIBUTE as FILTER_ATTRIBUTE
from postpy.queue import qfile
from postpy.tables.maps import TableError, open_table
from postpy.util import maillog

UNCHECKED_ORIGINS = frozenset({"bounce", "local"})
CONFIG_ERROR = "4.3.5 Server configuration error"
DEFAULT_REJECT = "5.7.1 Message content rejected"
_DSN = re.compile(r"[45]\.[0-9]{1,3}\.[0-9]{1,3}(?:\s|$)")
_LOGGED_TEXT = 200


class ContentRefusal(Refusal):
    """A REJECT action (its log line is already written, in Postfix's words)."""


def is_mime_header(name: str) -> bool:
    lower = name.lower()
    return lower.startswith("content-") or lower == "mime-version"


def reject_reply(text: str) -> str:
    """``X.Y.Z text`` for REJECT's optional text."""
    text = text.strip()
    if not text:
        return DEFAULT_REJECT
    return text if _DSN.match(text) else f"5.7.1 {text}"


@dataclass(frozen=True)
class CheckSettings:
    header_checks: tuple[str, ...] = ()
    mime_header_checks: tuple[str, ...] = ()
    nested_header_checks: tuple[str, ...] = ()
    body_checks: tuple[str, ...] = ()
    body_checks_size_limit: int = 51200
    line_length_limit: int = 2048
    header_size_limit: int = 102400

    @classmethod
    def from_config(cls, cfg: Config) -> CheckSettings:
        return cls(header_checks=tuple(cfg.get_list("header_checks")),
                   mime_header_checks=tuple(cfg.get_list("mime_header_checks")),
                   nested_header_checks=tuple(cfg.get_list("nested_header_checks")),
                   body_checks=tuple(cfg.get_list("body_checks")),
                   body_checks_size_limit=cfg.get_size("body_checks_size_limit"),
                   line_length_limit=cfg.get_size("line_length_limit"),
                   header_size_limit=cfg.get_size("header_size_limit"))

    def tables(self) -> list[str]:
        specs = (*self.header_checks, *self.mime_header_checks, *self.nested_header_checks,
                 *self.body_checks)
        return list(dict.fromkeys(specs))

    def open_tables(self) -> None:
        """Open every table now (before a chroot); a failure is logged, and
        tried again for each message."""
        for spec in self.tables():
            try:
                open_table(spec)
            except TableError:
                pass

    def for_message(self, env: CheckedEnvelope, queue_id: str) -> ContentChecks | None:
        """The checks for one message, or None when it is not inspected."""
        if not self.tables() or env.origin in UNCHECKED_ORIGINS:
            return None
        if not Overrides.from_attrs(env.attrs).header_body_checks:
            return None
        return ContentChecks(self, env, queue_id)


@dataclass
class ContentChecks:
    """The checks of one message, and what they decided."""

    settings: CheckSettings
    env: CheckedEnvelope
    queue_id: str
    stopped: bool = False            # REJECT, DISCARD or PASS: no more inspection
    discard: bool = False
    hold: bool = False
    redirect: str = ""
    filter: str = ""
    bcc: list[str] = field(default_factory=list)
    envelope_pending: bool = False   # REDIRECT, FILTER or BCC not yet in the envelope
    _scanner: MimeScanner | None = None
    _segment: int = -1
    _segment_used: int = 0

    # -- the primary header block ----------------------------------------------
    def check_headers(self, headers: list[Header]) -> list[Header]:
        """The primary header block after the header checks (may raise ContentRefusal)."""
        out: list[Header] = []
        for header in headers:
            if is_mime_header(header.name):
                specs, param = self.settings.mime_header_checks, "mime_header_checks"
            else:
                specs, param = self.settings.header_checks, "header_checks"
            new = None if self.stopped else self._inspect("header", header.raw, specs, param, True)
            if new is None:
                out.append(header)
            else:
                out.extend(Header(header_name(raw) or "", raw) for raw in new)
        self._scanner = MimeScanner(headers, line_limit=self.settings.line_length_limit,
                                    header_limit=self.settings.header_size_limit,
                                    body_lines=bool(self.settings.body_checks))
        return out

    # -- the body ------------------------------------------------------------------
    def body(self, data: bytes) -> bytes:
        """The body bytes to store for ``data`` (may raise ContentRefusal)."""
        if self._scanner is None:
            return data
        return self._pieces(self._scanner.feed(data))

    def end(self) -> bytes:
        """The body bytes still held back, at the end of the content."""
        if self._scanner is None:
            return b""
        return self._pieces(self._scanner.close())

    def _pieces(self, pieces: list[Piece]) -> bytes:
        out = bytearray()
        for piece in pieces:
            new = None if piece.kind == RAW or self.stopped else self._piece(piece)
            if self.discard:
                break                     # nothing more is stored
            out += piece.data if new is None else b"".join(new)
        return bytes(out)

    def _piece(self, piece: Piece) -> list[bytes] | None:
        if piece.kind == HEADER:
            name = header_name(piece.data) or ""
            if piece.header_class == NESTED and not is_mime_header(name):
                return self._inspect("header", piece.data, self.settings.nested_header_checks,
                                     "nested_header_checks", True)
            return self._inspect("header", piece.data, self.settings.mime_header_checks,
                                 "mime_header_checks", True)
        if piece.segment != self._segment:
            self._segment, self._segment_used = piece.segment, 0
        self._segment_used += len(piece.data)
        limit = self.settings.body_checks_size_limit
        if limit and self._segment_used - len(piece.data) >= limit:
            return None
        return self._inspect("body", piece.data, self.settings.body_checks, "body_checks", False)

    # -- one line ---------------------------------------------------------------------
    def _inspect(self, what: str, raw: bytes, specs: tuple[str, ...], param: str,
                 is_header: bool) -> list[bytes] | None:
        """The lines to store instead of ``raw``, or None to keep it."""
        if not specs:
            return None
        text = raw.decode("utf-8", "surrogateescape")
        text = text[:-1] if text.endswith("\n") else text
        text = text.replace("\r\n", "\n").rstrip("\r")
        if not text:
            return None                   # empty lines never match
        value = self._lookup(specs, text, param)
        if value is None:
            return None
        return self._act(what, text, raw, value, param, is_header)

    def _lookup(self, specs: tuple[str, ...], text: str, param: str) -> str | None:
        for spec in specs:
            try:
                value = open_table(spec).lookup(text)
            except TableError as exc:
                maillog.warning(f"{self.queue_id}: {param} map {spec}: {exc} -- "
                                "message not accepted, try again later")
                raise Refusal("temp", CONFIG_ERROR) from None
            if value is not None:
                return value
        return None

    def _act(self, what: str, text: str, raw: bytes, value: str, param: str,
             is_header: bool) -> list[bytes] | None:
        words = value.split(None, 1)
        verb = words[0].upper() if words else ""
        arg = words[1].strip() if len(words) > 1 else ""
        if verb == "REJECT":
            reply = reject_reply(arg)
            self._log("reject", what, text, reply)
            self.stopped = True
            raise ContentRefusal("temp" if reply.startswith("4") else "perm", reply)
        if verb in ("DISCARD", "PASS"):
            self._log(verb.lower(), what, text, arg)
            self.stopped = True
            self.discard = self.discard or verb == "DISCARD"
        elif verb == "HOLD":
            self._log("hold", what, text, arg)
            self.hold = True
        elif verb in ("WARN", "INFO"):
            self._log("warning" if verb == "WARN" else "info", what, text, arg)
        elif verb in ("IGNORE", "STRIP"):
            if verb == "STRIP":
                self._log("strip", what, text, arg)
            return []
        elif verb in ("REDIRECT", "BCC"):
            if "@" not in arg:
                maillog.warning(f"{self.queue_id}: bad {verb} target \"{arg}\" in {param} map, "
                                "need user@domain")
                return None
            if verb == "REDIRECT":
                self._log("redirect", what, text, arg)
                self.redirect = arg
            else:
                self.bcc.append(arg)
            self.envelope_pending = True
        elif verb == "FILTER":
            if ":" not in arg:
                maillog.warning(f"{self.queue_id}: bad FILTER action \"{arg}\" in {param} map, "
                                "need transport:destination")
                return None
            self._log("filter", what, text, arg)
            self.filter = arg
            self.envelope_pending = True
        elif verb in ("PREPEND", "REPLACE"):
            line = arg.encode("utf-8", "surrogateescape")
            if not arg or (is_header and header_name(line) is None):
                maillog.warning(f"{self.queue_id}: bad {verb} text \"{arg}\" in {param} map"
                                + (", need \"headername: headervalue\"" if is_header else ""))
                return None
            self._log(verb.lower(), what, text, arg)
            return [line + b"\n", raw] if verb == "PREPEND" else [line + b"\n"]
        elif verb not in ("DUNNO", "OK"):
            maillog.warning(f"{self.queue_id}: unknown command in {param} map: {value}")
        return None

    # -- the envelope -------------------------------------------------------------------
    def apply_to(self, env: CheckedEnvelope) -> None:
        """Put REDIRECT, FILTER and BCC decisions into the envelope."""
        if self.redirect:
            env.recipients[:] = [qfile.Recipient(self.redirect)]
            env.stored.pop(FILTER_ATTRIBUTE, None)
        elif self.filter:
            env.stored[FILTER_ATTRIBUTE] = self.filter
        for address in self.bcc:
            add_recipient(env.recipients, address, "", notify="NEVER")
        self.envelope_pending = False

    # -- the log -------------------------------------------------------------------------
    def _log(self, action: str, what: str, text: str, arg: str) -> None:
        a = self.env.attrs
        if a.get("client_addr"):
            client = f"{a.get('client_name') or 'unknown'}[{a['client_addr']}]"
        else:
            client = "local"
        line = f"{self.queue_id}: {action}: {what} {text[:_LOGGED_TEXT]} from {client}; " \
               f"from=<{self.env.sender}>"
        if self.env.recipients:
            line += f" to=<{self.env.recipients[0].address}>"
        if a.get("protocol"):
            line += f" proto={a['protocol']}"
        if a.get("helo"):
            line += f" helo=<{a['helo']}>"
        maillog.info(line + (f": {arg}" if arg else ""))
