"""sendmail's command line: Postfix's option set, parsed into :class:`Options`.

Pure parsing, no I/O: every rule is a row in the unit tests.  The option
letters are Postfix's (``A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx``)
with the same treatment (sendmail(1), COMPAT.md section 1):

- Options come first: parsing stops at ``--`` or at the first argument
  that is not an option (POSIX order, as Postfix on Linux), so a
  recipient can never be taken for an option.
- ``-q`` takes its value from the same argument only (``-q``, ``-q30m``,
  ``-qRsite``, ``-qIid``); every other option that takes a value takes
  the rest of the argument or the next one (``-fuser``, ``-f user``).
- ``-o`` letters: ``-oi`` is ``-i``; ``-oAfile`` names the alias database
  for ``-bi`` (``-oA`` alone is a usage error); the others (``-om``,
  ``-o7``, ``-oeq``, ...) are ignored.
- Ignored with their value: ``-A -L -O -e -h -p`` (``-O SMTPUTF8=yes`` is
  kept); ignored without: ``-G -U -c -m -x``.  ``-n`` is fatal (Postfix's
  code disagrees with its man page; we follow the code).
- ``-N``, ``-V`` with a bad value only warn; ``-B``, ``-R``, ``-b``,
  ``-q`` with a bad value are usage errors.

What the options mean together (which mode, what is refused with what)
is decided in :mod:`postpy.cli.sendmail`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WITH_VALUE = frozenset("ABCFLNORVXbefhopr")
WITHOUT_VALUE = frozenset("GIUcimntvx")
MODES = frozenset("dhHilmpsv")      # -b letters: d h H i l m p s v

NOTIFY_WORDS = ("SUCCESS", "DELAY", "FAILURE")


class UsageError(Exception):
    """A bad command line; str() is the text after ``sendmail: fatal:``."""


@dataclass
class Options:
    mode: str = "m"                 # the -b letter; "I" is newaliases, "q" is the queue runner
    sender: str | None = None       # -f/-r, with surrounding <> removed; "" is the null sender
    full_name: str | None = None    # -F
    extract: bool = False           # -t
    ignore_dots: bool = False       # -i, -oi
    notify: str = ""                # -N, as DSN NOTIFY ("NEVER" or SUCCESS,DELAY,FAILURE)
    ret: str = ""                   # -R: FULL | HDRS
    envid: str = ""                 # -V
    body: str = ""                  # -B: 7BIT | 8BITMIME
    smtputf8: bool = False          # -O SMTPUTF8=yes
    verp: bool = False              # -XV
    verbose: int = 0                # -v
    config_dir: str | None = None   # -C
    alias_database: str | None = None  # -oA
    queue_action: str = ""          # -q: "" flush all, "R" site, "I" id, "interval" ignored
    queue_arg: str = ""
    recipients: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_notify(value: str) -> str | None:
    """``-N`` value as DSN NOTIFY, or None when it is not valid."""
    words = [w.strip().upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in NOTIFY_WORDS for w in words) or len(set(words)) != len(words):
        return None
    return ",".join(w for w in NOTIFY_WORDS if w in words)


def _strip_angles(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        return value[1:-1].strip()
    return value


def _queue_option(opts: Options, value: str) -> None:
    opts.mode = "q"
    if not value:
        opts.queue_action = ""
    elif value[0].isdigit():
        opts.queue_action = "interval"          # -q30m: a daemon's interval; nothing to do
    elif value[0] in "RI":
        if not value[1:]:
            raise UsageError(f"-q{value[0]} requires {'a site' if value[0] == 'R' else 'a queue ID'}")
        opts.queue_action, opts.queue_arg = value[0], value[1:]
    else:
        raise UsageError(f"-q{value[0]} is not implemented")


def _option_o(opts: Options, value: str) -> None:
    if value == "i":
        opts.ignore_dots = True
    elif value.startswith("A"):
        if not value[1:]:
            raise UsageError("-oA requires pathname")
        opts.alias_database = value[1:]
    # -o7, -o8, -om, -oe?, -oX...: ignored, as Postfix does.


def _apply(opts: Options, letter: str, value: str) -> None:
    if letter == "b":
        if len(value) != 1 or value not in MODES:
            raise UsageError(f"unsupported: -b{value[:20]}")
        opts.mode = value
    elif letter == "I":
        opts.mode = "i"
    elif letter == "B":
        body = value.upper()
        if body not in ("7BIT", "8BITMIME"):
            raise UsageError("-B option needs 8BITMIME or 7BIT")
        opts.body = body
    elif letter == "C":
        opts.config_dir = value
    elif letter == "F":
        opts.full_name = value
    elif letter in "fr":
        opts.sender = _strip_angles(value)
    elif letter == "N":
        notify = parse_notify(value)
        if notify is None:
            opts.warnings.append(f"bad -N option value -- ignored: {value[:60]}")
        else:
            opts.notify = notify
    elif letter == "R":
        ret = value.upper()
        if ret not in ("FULL", "HDRS"):
            raise UsageError("-R option needs FULL or HDRS")
        opts.ret = ret
    elif letter == "V":
        if 0 < len(value) <= 100 and all(0x21 <= ord(c) <= 0x7E for c in value):
            opts.envid = value
        else:
            opts.warnings.append("bad -V option value (1 to 100 printable characters) -- ignored")
    elif letter == "X":
        if value.startswith("V"):
            opts.verp = True                    # -XV, -XVxy; other -X values: a log file, ignored
    elif letter == "O":
        if value.upper() in ("SMTPUTF8=YES", "SMTPUTF8"):
            opts.smtputf8 = True
    elif letter == "o":
        _option_o(opts, value)
    elif letter == "n":
        raise UsageError("-n option not supported")
    elif letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.ignore_dots = True
    elif letter == "v":
        opts.verbose += 1
    # A e h L p (with value) and G U c m x (without): accepted and ignored.


def parse_args(argv: list[str], mode: str = "m") -> Options:
    """Parse sendmail's arguments (without argv[0]); raises :class:`UsageError`.

    ``mode`` is the default the program name chose (``p`` for mailq, ``i``
    for newaliases); options may override it.
    """
    opts = Options(mode=mode)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter == "q":
                _queue_option(opts, arg[j + 1:])
                break
            if letter in WITH_VALUE:
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option requires an argument -- {letter}")
                    value = argv[i]
                _apply(opts, letter, value)
                break
            if letter not in WITHOUT_VALUE:
                raise UsageError(f"invalid option -- {letter!r}")
            _apply(opts, letter, "")
            j += 1
        i += 1
    opts.recipients = list(argv[i:])
    return opts
