"""The Sendmail milter protocol, version 6: packets, commands, replies.

The one definition of every constant postpy's milter client speaks, and
the pure byte logic around them (no I/O, so every malformed packet is a
unit test).  Where it sits in the mail path: smtpd (through
:mod:`postpy.milter.client`) sends one command per SMTP event to each
milter in ``smtpd_milters`` and reads back its reply.

A packet is ``length (4 bytes, big endian, counts the command byte)``,
``command (1 byte)``, ``data``.  Strings are NUL-terminated; integers are
4-byte (the connect port: 2-byte) big-endian.

Negotiation (``SMFIC_OPTNEG``): the MTA offers version 6, every
modification action it can carry out (:data:`ALL_ACTIONS`) and every
protocol step flag it understands (:data:`ALL_STEPS`); the milter answers
with the subset it wants.  A step the milter declines (``SMFIP_NOHELO``,
``SMFIP_NOBODY``, ...) is never sent; a step marked ``SMFIP_NR_*`` is sent
without waiting for a reply.  A milter may also ask for its own macro
lists per stage (:data:`MACRO_STAGES`), which then replace the configured
``milter_*_macros`` for it.

Anything that does not parse raises :class:`MilterProtocolError`; the
caller turns that into ``milter_default_action``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 6
MAX_PACKET = 1024 * 1024 + 64          # the largest reply accepted (1 MiB body chunks, SMFIP_MDS_1M)
CHUNK = 65535                          # body bytes per SMFIC_BODY (libmilter's MILTER_CHUNK_SIZE)

# -- commands, MTA -> milter -------------------------------------------------
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# -- replies and modification requests, milter -> MTA -------------------------
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# Replies that end a command (the rest are modifications or progress).
FINAL_REPLIES = frozenset({SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_DISCARD, SMFIR_REJECT,
                           SMFIR_TEMPFAIL, SMFIR_REPLYCODE, SMFIR_SKIP, SMFIR_SHUTDOWN,
                           SMFIR_CONN_FAIL})
# Modification requests, allowed at end of message only, each needing its action flag.
MODIFICATIONS = frozenset({SMFIR_ADDRCPT, SMFIR_DELRCPT, SMFIR_ADDRCPT_PAR, SMFIR_REPLBODY,
                           SMFIR_CHGFROM, SMFIR_ADDHEADER, SMFIR_INSHEADER, SMFIR_CHGHEADER,
                           SMFIR_QUARANTINE})

# -- actions (what the milter may change) --------------------------------------
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

ACTION_FOR = {
    SMFIR_ADDHEADER: SMFIF_ADDHDRS, SMFIR_INSHEADER: SMFIF_ADDHDRS, SMFIR_CHGHEADER: SMFIF_CHGHDRS,
    SMFIR_REPLBODY: SMFIF_CHGBODY, SMFIR_ADDRCPT: SMFIF_ADDRCPT, SMFIR_DELRCPT: SMFIF_DELRCPT,
    SMFIR_QUARANTINE: SMFIF_QUARANTINE, SMFIR_CHGFROM: SMFIF_CHGFROM,
    SMFIR_ADDRCPT_PAR: SMFIF_ADDRCPT_PAR,
}

# -- protocol steps ---------------------------------------------------------
SMFIP_NOCONNECT = 0x01
SMFIP_NOHELO = 0x02
SMFIP_NOMAIL = 0x04
SMFIP_NORCPT = 0x08
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000
ALL_STEPS = 0x1FFFFF | SMFIP_MDS_256K | SMFIP_MDS_1M

# Per command: the "do not send" flag and the "no reply" flag.
STEP_FLAGS: dict[bytes, tuple[int, int]] = {
    SMFIC_CONNECT: (SMFIP_NOCONNECT, SMFIP_NR_CONN),
    SMFIC_HELO: (SMFIP_NOHELO, SMFIP_NR_HELO),
    SMFIC_MAIL: (SMFIP_NOMAIL, SMFIP_NR_MAIL),
    SMFIC_RCPT: (SMFIP_NORCPT, SMFIP_NR_RCPT),
    SMFIC_DATA: (SMFIP_NODATA, SMFIP_NR_DATA),
    SMFIC_HEADER: (SMFIP_NOHDRS, SMFIP_NR_HDR),
    SMFIC_EOH: (SMFIP_NOEOH, SMFIP_NR_EOH),
    SMFIC_BODY: (SMFIP_NOBODY, SMFIP_NR_BODY),
    SMFIC_UNKNOWN: (SMFIP_NOUNKNOWN, SMFIP_NR_UNKN),
}

# -- macro stages (SMFIC_OPTNEG macro lists, SMFIR_SETSYMLIST) -------------------
SMFIM_CONNECT, SMFIM_HELO, SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIM_DATA, SMFIM_EOM, SMFIM_EOH = range(7)
MACRO_STAGES = {SMFIM_CONNECT: SMFIC_CONNECT, SMFIM_HELO: SMFIC_HELO, SMFIM_ENVFROM: SMFIC_MAIL,
                SMFIM_ENVRCPT: SMFIC_RCPT, SMFIM_DATA: SMFIC_DATA, SMFIM_EOM: SMFIC_BODYEOB,
                SMFIM_EOH: SMFIC_EOH}

# -- connect address families ----------------------------------------------------
SMFIA_UNKNOWN = b"U"
SMFIA_UNIX = b"L"
SMFIA_INET = b"4"
SMFIA_INET6 = b"6"

_LEN = struct.Struct(">I")
_OPTNEG = struct.Struct(">III")


class MilterProtocolError(Exception):
    """A packet that does not follow the protocol; str() says how."""


# -- framing -------------------------------------------------------------------

def packet(command: bytes, data: bytes = b"") -> bytes:
    return _LEN.pack(len(data) + 1) + command + data


def packet_length(header: bytes, limit: int = MAX_PACKET) -> int:
    """The length of the packet whose 4-byte header this is (command + data)."""
    (length,) = _LEN.unpack(header)
    if length < 1 or length > limit:
        raise MilterProtocolError(f"packet length {length} out of range")
    return length


def cstrings(*values: str) -> bytes:
    return b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in values)


def split_cstrings(data: bytes, count: int | None = None) -> list[str]:
    """NUL-terminated strings; exactly ``count`` of them when given."""
    if data and not data.endswith(b"\0"):
        raise MilterProtocolError("string not NUL-terminated")
    parts = [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0")[:-1]] if data else []
    if count is not None and len(parts) != count:
        raise MilterProtocolError(f"expected {count} string(s), got {len(parts)}")
    return parts


# -- commands ---------------------------------------------------------------------

def optneg(version: int = VERSION, actions: int = ALL_ACTIONS, steps: int = ALL_STEPS) -> bytes:
    return packet(SMFIC_OPTNEG, _OPTNEG.pack(version, actions, steps))


def macro(command: bytes, values: dict[str, str]) -> bytes:
    flat = [s for pair in values.items() for s in pair]
    return packet(SMFIC_MACRO, command + cstrings(*flat))


def connect(hostname: str, family: bytes = SMFIA_UNKNOWN, port: int = 0, address: str = "") -> bytes:
    data = cstrings(hostname) + family
    if family != SMFIA_UNKNOWN:
        data += struct.pack(">H", port) + cstrings(address)
    return packet(SMFIC_CONNECT, data)


def helo(name: str) -> bytes:
    return packet(SMFIC_HELO, cstrings(name))


def mail(sender: str, args: list[str] | tuple[str, ...] = ()) -> bytes:
    return packet(SMFIC_MAIL, cstrings(f"<{sender}>", *args))


def rcpt(recipient: str, args: list[str] | tuple[str, ...] = ()) -> bytes:
    return packet(SMFIC_RCPT, cstrings(f"<{recipient}>", *args))


def header(name: str, value: str) -> bytes:
    return packet(SMFIC_HEADER, cstrings(name, value))


def body(chunk: bytes) -> bytes:
    return packet(SMFIC_BODY, chunk)


def unknown(command: str) -> bytes:
    return packet(SMFIC_UNKNOWN, cstrings(command))


def simple(command: bytes) -> bytes:
    """DATA, EOH, BODYEOB, ABORT, QUIT, QUIT_NC: no data."""
    return packet(command)


# -- negotiation reply ------------------------------------------------------------

@dataclass
class Negotiated:
    version: int
    actions: int
    steps: int
    macros: dict[int, list[str]] = field(default_factory=dict)   # stage -> names the milter asked for

    def skips(self, command: bytes) -> bool:
        flags = STEP_FLAGS.get(command)
        return flags is not None and bool(self.steps & flags[0])

    def no_reply(self, command: bytes) -> bool:
        flags = STEP_FLAGS.get(command)
        return flags is not None and bool(self.steps & flags[1])

    def allows(self, command: bytes) -> bool:
        """May the milter send this modification request?"""
        return bool(self.actions & ACTION_FOR.get(command, 0))


def parse_optneg(data: bytes, offered_actions: int = ALL_ACTIONS,
                 offered_steps: int = ALL_STEPS) -> Negotiated:
    """The milter's SMFIC_OPTNEG answer, checked against what was offered."""
    if len(data) < _OPTNEG.size:
        raise MilterProtocolError(f"negotiation reply of {len(data)} bytes")
    version, actions, steps = _OPTNEG.unpack_from(data)
    if version < 2 or version > VERSION:
        raise MilterProtocolError(f"protocol version {version} not supported")
    if actions & ~offered_actions:
        raise MilterProtocolError(f"actions 0x{actions & ~offered_actions:x} not offered")
    if steps & ~offered_steps:
        raise MilterProtocolError(f"protocol steps 0x{steps & ~offered_steps:x} not offered")
    macros: dict[int, list[str]] = {}
    rest = data[_OPTNEG.size:]
    while rest:
        if len(rest) < 5:
            raise MilterProtocolError("truncated macro list")
        (stage,) = _LEN.unpack_from(rest)
        end = rest.find(b"\0", 4)
        if end < 0 or stage not in MACRO_STAGES:
            raise MilterProtocolError(f"malformed macro list for stage {stage}")
        names = rest[4:end].decode("ascii", "replace").replace(",", " ").split()
        macros[stage] = names
        rest = rest[end + 1:]
    return Negotiated(version, actions, steps, macros)


def optneg_reply(version: int, actions: int, steps: int,
                 macros: dict[int, str] | None = None) -> bytes:
    """A milter's negotiation answer (for tests and test milters)."""
    data = _OPTNEG.pack(version, actions, steps)
    for stage, names in (macros or {}).items():
        data += _LEN.pack(stage) + names.encode("ascii") + b"\0"
    return packet(SMFIC_OPTNEG, data)


# -- replies ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """One decoded reply packet.  ``args`` holds its strings; ``index`` the
    header index of INSHEADER/CHGHEADER; ``data`` a REPLBODY chunk."""

    command: bytes
    args: tuple[str, ...] = ()
    index: int = 0
    data: bytes = b""

    @property
    def final(self) -> bool:
        return self.command in FINAL_REPLIES


def parse_reply(command: bytes, data: bytes) -> Reply:
    """Decode one packet from a milter (anything but the negotiation)."""
    if command in (SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_DISCARD, SMFIR_REJECT, SMFIR_TEMPFAIL,
                   SMFIR_PROGRESS, SMFIR_SKIP, SMFIR_SHUTDOWN, SMFIR_CONN_FAIL):
        return Reply(command)            # libmilter sends no data; any is ignored
    if command == SMFIR_REPLBODY:
        return Reply(command, data=data)
    if command == SMFIR_REPLYCODE:
        (text,) = split_cstrings(data, 1)
        return Reply(command, (text,))
    if command in (SMFIR_ADDRCPT, SMFIR_DELRCPT, SMFIR_QUARANTINE):
        return Reply(command, tuple(split_cstrings(data, 1)))
    if command in (SMFIR_ADDRCPT_PAR, SMFIR_CHGFROM):
        parts = split_cstrings(data)
        if len(parts) not in (1, 2):
            raise MilterProtocolError(f"{command.decode()} with {len(parts)} strings")
        return Reply(command, tuple(parts))
    if command == SMFIR_ADDHEADER:
        return Reply(command, tuple(split_cstrings(data, 2)))
    if command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        if len(data) < 4:
            raise MilterProtocolError(f"{command.decode()} without an index")
        (index,) = _LEN.unpack_from(data)
        return Reply(command, tuple(split_cstrings(data[4:], 2)), index=index)
    if command == SMFIR_SETSYMLIST:
        raise MilterProtocolError("SETSYMLIST outside negotiation")
    raise MilterProtocolError(f"unknown reply {command!r}")


def encode_reply(reply: Reply) -> bytes:
    """The packet for a reply (for tests and test milters)."""
    if reply.command == SMFIR_REPLBODY:
        return packet(reply.command, reply.data)
    data = cstrings(*reply.args)
    if reply.command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        data = _LEN.pack(reply.index) + data
    return packet(reply.command, data)


def parse_replycode(text: str) -> tuple[int, str]:
    """``"550 5.7.1 text"`` -> (550, "5.7.1 text"): a 4xx or 5xx code only
    (libmilter's smfi_setreply rule).  A multi-line reply (``550-...``) is
    joined into one line."""
    code = text[:3]
    if not code.isdigit() or code[0] not in "45" or text[3:4] not in ("", " ", "-"):
        raise MilterProtocolError(f"bad reply code in {text[:40]!r}")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    parts = [line[4:] if line[:3] == code else line for line in lines]
    return int(code), " ".join(p.strip() for p in parts if p.strip())
