"""postalias(1) and newaliases: build, query and update alias tables.

    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [type:]file...
    newaliases [-c config_dir] [-v] [-oA path]

postalias is postmap(1) with the aliases(5) source syntax
(:mod:`postpy.tables.aliases_parser`): it writes ``file.lmdb`` atomically,
with names folded to lower case, the values in external (quoted) form so
local delivery can split them again, and the Sendmail signature entry
``@`` -> ``@``.  A malformed source line warns
``postalias: warning: FILE, line N: ...`` and is skipped; an unreadable
source or a failed write leaves the old table untouched and exits non-zero.
The options and exit statuses are those of postmap (see
:mod:`postpy.cli.postmap`); ``-q -`` and ``-s`` print ``key:<TAB>value``.

newaliases (also ``sendmail -bi``/``-I``) rebuilds every table listed in
``alias_database`` (default ``lmdb:/etc/aliases``) of the configuration
chosen by ``-c``/``-C`` or $MAIL_CONFIG; an empty ``alias_database`` does
nothing.  ``-oA path`` rebuilds that one file instead.  Daemons see a
rebuilt table at their next lookup.
"""

from __future__ import annotations

import sys

from postpy.cli.postmap import Flavor, fatal, run
from postpy.config.maincf import ConfigError, load_config
from postpy.tables.aliases_parser import parse_aliases
from postpy.tables.source_parser import Entry, ParseResult
from postpy.util import maillog
from postpy.util.sysexits import EX_CONFIG, EX_USAGE


def _parse_aliases(text: str, source: str, fold: bool, duplicates: str, utf8: bool) -> ParseResult:
    parsed = parse_aliases(text, source, fold_case=fold, duplicates=duplicates, utf8_check=utf8)
    entries = [Entry(entry.name, entry.value, entry.line) for entry in parsed.entries]
    return ParseResult(entries, parsed.warnings)


POSTALIAS = Flavor(
    program="postalias",
    usage="usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
    parse=_parse_aliases,
    query_line="{key}:\t{value}",
    signature=True,
)

NEWALIASES_USAGE = "usage: newaliases [-c config_dir] [-v] [-oA path]"


def main(argv: list[str] | None = None) -> int:
    return run(POSTALIAS, argv)


def newaliases(config_dir: str | None = None, databases: list[str] | None = None,
               verbose: int = 0) -> int:
    """Rebuild ``databases`` (default: ``alias_database`` from the config).

    The in-process form of ``sendmail -bi``; returns the exit status.
    """
    try:
        cfg = load_config(config_dir)
        if databases is None:
            databases = cfg.get_list("alias_database")
    except ConfigError as exc:
        maillog.setup("newaliases", stderr=True)
        return fatal(str(exc), EX_CONFIG)
    if not databases:
        return 0
    return main(["-c", cfg.config_dir, *(["-v"] * verbose), "--", *databases])


def _newaliases_args(argv: list[str]) -> tuple[str | None, list[str] | None, int] | str:
    """Parse newaliases options; a string is a usage error."""
    config_dir: str | None = None
    databases: list[str] | None = None
    verbose = 0
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if arg in ("-c", "-C"):
            if not args:
                return f"option {arg} requires an argument"
            config_dir = args.pop(0)
        elif arg.startswith(("-c", "-C")):
            config_dir = arg[2:]
        elif arg == "-v":
            verbose += 1
        elif arg.startswith("-oA"):
            path = arg[3:] or (args.pop(0) if args else "")
            if not path:
                return "-oA requires pathname"
            databases = [path]
        else:
            return f"unknown option {arg}"
    if args:
        return "newaliases takes no file arguments"
    return config_dir, databases, verbose


def newaliases_main(argv: list[str] | None = None) -> int:
    parsed = _newaliases_args(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, str):
        maillog.setup("newaliases", stderr=True)
        return fatal(f"{parsed}; {NEWALIASES_USAGE}", EX_USAGE)
    return newaliases(*parsed)


if __name__ == "__main__":
    raise SystemExit(main())
