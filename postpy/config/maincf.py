"""main.cf: read it, expand ``$name`` references, convert values by type.

This is the only reader of main.cf.  Syntax (Postfix's):

- ``name = value``; white space around ``=`` and at the end is dropped;
- a line that starts with white space continues the previous line;
- a line whose first non-blank character is ``#`` is a comment, as is an
  empty line (neither ends a logical line that continues after it);
- ``$name``, ``${name}`` and ``$(name)`` are replaced by the value of that
  parameter when read; ``${name?text}`` gives text when name is non-empty,
  ``${name:text}`` when it is empty; ``$$`` is a literal dollar.

A malformed line raises :class:`ConfigError` naming file and line; so does
a NUL or a byte sequence that is not UTF-8 outside a comment (read with
``surrogateescape``, it would reach a file name or a log line later).
Numbers are bounded in digits before they are converted.  An
unknown parameter name is only a warning (Postfix's behaviour: it may be a
user-defined parameter used in expansions).  Defaults come from
:mod:`postpy.config.params`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from postpy.config.params import BY_NAME, declared

DEFAULT_CONFIG_DIR = "/etc/postpy"


class ConfigError(Exception):
    """A configuration problem; str() names the file and line when known."""


@dataclass
class Setting:
    name: str
    value: str
    line: int


def config_dir_from(cli_value: str | None) -> str:
    """The configuration directory: ``-c DIR``, else $MAIL_CONFIG, else the default."""
    chosen = cli_value or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR
    return os.path.abspath(chosen)


# NUL, and the surrogate escapes that stand for bytes that are not UTF-8.
_BAD_TEXT = re.compile("[\0\udc80-\udcff]")
MAX_DIGITS = 18             # an integer parameter fits a signed 64-bit number
MAX_EXPANSION_DEPTH = 100   # $a -> $b -> ... (a loop is reported before this)


def logical_lines(text: str, path: str) -> Iterator[tuple[int, str]]:
    """Join continuation lines; yield (first line number, logical line).

    Shared by main.cf and master.cf, whose continuation rules are the same.
    """
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):   # not splitlines(): \f, \x1c, U+2028 are text
        raw = raw.removesuffix("\r")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        bad = _BAD_TEXT.search(raw)
        if bad:
            what = "a NUL character" if bad.group() == "\0" else "text that is not UTF-8"
            raise ConfigError(f"{path}, line {number}: {what} in column {bad.start() + 1}")
        if raw[0] in " \t":
            if not current:
                raise ConfigError(f"{path}, line {number}: logical line must not start with whitespace")
            current.append(stripped)
            continue
        if current:
            yield start, " ".join(current)
        current, start = [raw.rstrip()], number
    if current:
        yield start, " ".join(current)


_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_main_cf(text: str, path: str = "main.cf") -> list[Setting]:
    """Parse main.cf text into settings, in file order (a later one wins)."""
    settings: list[Setting] = []
    for number, line in logical_lines(text, path):
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{path}, line {number}: missing '=' after attribute name: \"{line[:60]}\"")
        if not _NAME.match(name):
            raise ConfigError(f"{path}, line {number}: bad parameter name: \"{name[:60]}\"")
        settings.append(Setting(name, value.strip(), number))
    return settings


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The text of ${name?text} may hold one level of {...}: ${a?${b}} and Postfix 3's ${a?{text}}.
_REF = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)(?:([?:])((?:[^{}]|\{[^{}]*\})*))?\}"
                  r"|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))")


_REF_NAMES = re.compile(r"\$\{?\(?([A-Za-z0-9_]+)")


def parse_time(value: str, name: str = "value") -> float:
    """``300s``, ``5m``, ``2h``, ``5d``, ``1w`` or a bare number of seconds."""
    m = re.fullmatch(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*([smhdw]?)\s*", value)
    if not m:
        raise ConfigError(f"bad time value for parameter {name}: {value!r}")
    return float(m.group(1)) * _TIME_UNITS.get(m.group(2) or "s", 1)


def split_list(value: str) -> list[str]:
    """Postfix list syntax: words separated by commas and/or white space.

    ``{...}`` groups (as in ``inline:{a=b, c=d}``) are kept whole.
    """
    words: list[str] = []
    buf = ""
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if buf:
                words.append(buf)
            buf = ""
            continue
        buf += ch
    if buf:
        words.append(buf)
    return words


def system_hostname() -> str:
    name = os.uname().nodename
    return name if "." in name else name + ".localdomain"


@dataclass
class Config:
    """Parameter values for one configuration directory.

    ``explicit`` holds what main.cf sets (and ``-o`` overrides); everything
    else falls back to the defaults table.  Values are expanded on read.
    """

    config_dir: str
    explicit: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    main_cf: str = ""

    # -- raw access -----------------------------------------------------
    def raw(self, name: str) -> str | None:
        if name == "config_directory":
            return self.config_dir
        if name in self.explicit:
            return self.explicit[name]
        if name == "myhostname":
            return self.explicit.get(name) or system_hostname()
        if name == "mydomain":
            host = self.get("myhostname")
            return host.partition(".")[2] or "localdomain"
        param = declared(name)
        return param.default if param else None

    def is_known(self, name: str) -> bool:
        return declared(name) is not None or name in self.explicit

    # -- expansion ------------------------------------------------------
    def expand(self, text: str, extra: Mapping[str, str] | None = None,
               _stack: tuple[str, ...] = ()) -> str:
        """Replace $name references; ``extra`` supplies names first (local(8) style)."""

        def lookup(name: str) -> str:
            if extra is not None and name in extra:
                return extra[name]
            if name in _stack:
                chain = " -> ".join((*_stack, name))
                raise ConfigError(f"parameter {_stack[0]}: recursion loop in expansion: {chain}")
            if len(_stack) >= MAX_EXPANSION_DEPTH:
                raise ConfigError(f"parameter {_stack[0]}: expansion nested deeper than {MAX_EXPANSION_DEPTH}")
            raw = self.raw(name)
            if raw is None:
                return ""
            return self.expand(raw, extra, (*_stack, name))

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1) or m.group(4) or m.group(5)
            value = lookup(name)
            alt = m.group(3) or ""
            if alt.startswith("{") and alt.endswith("}") and alt.count("{") == 1:
                alt = alt[1:-1]                      # ${name?{text}} (Postfix >= 3.0)
            if m.group(2) == "?":
                return self.expand(alt, extra, _stack) if value else ""
            if m.group(2) == ":":
                return "" if value else self.expand(alt, extra, _stack)
            return value

        return _REF.sub(replace, text)

    def get(self, name: str) -> str:
        raw = self.raw(name)
        if raw is None:
            raise ConfigError(f"unknown parameter: {name}")
        return self.expand(raw, None, (name,))

    # -- typed access ---------------------------------------------------
    def _checked_int(self, name: str, value: int) -> int:
        param = declared(name)
        if param and param.min is not None and value < param.min:
            raise ConfigError(f"parameter {name}: value {value} is below the minimum {param.min}")
        if param and param.max is not None and value > param.max:
            raise ConfigError(f"parameter {name}: value {value} is above the maximum {param.max}")
        return value

    def get_int(self, name: str) -> int:
        value = self.get(name).strip()
        if not re.fullmatch(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}", value):   # not "1_000", non-ASCII or 5,000 digits
            raise ConfigError(f"bad numerical configuration: {name} = {value}")
        return self._checked_int(name, int(value))

    get_size = get_int

    def get_bool(self, name: str) -> bool:
        value = self.get(name).strip().lower()
        if value in ("yes", "true", "on", "1"):
            return True
        if value in ("no", "false", "off", "0"):
            return False
        raise ConfigError(f"bad boolean configuration: {name} = {value}")

    def get_time(self, name: str) -> float:
        return parse_time(self.get(name), name)

    def get_list(self, name: str) -> list[str]:
        return split_list(self.get(name))

    def get_path(self, name: str) -> str:
        value = self.get(name)
        return os.path.normpath(value) if value else value

    # -- derived --------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, str]) -> Config:
        """A copy with ``-o name=value`` settings applied (master.cf)."""
        explicit = dict(self.explicit)
        explicit.update(overrides)
        return Config(self.config_dir, explicit, dict(self.lines), list(self.warnings), self.main_cf)

    def validate(self) -> list[str]:
        """Check every typed value; return error texts (empty when all is well)."""
        errors: list[str] = []
        getters = {"int": self.get_int, "size": self.get_size, "bool": self.get_bool,
                   "time": self.get_time, "list": self.get_list, "str": self.get}
        for name in sorted(set(BY_NAME) | set(self.explicit)):
            param = declared(name)
            kind = param.type if param else "str"
            try:
                getters[kind](name)
            except ConfigError as exc:
                line = self._origin_line(name)
                where = f"{self.main_cf}, line {line}: " if line else ""
                errors.append(f"{where}{exc}")
        return errors

    def _origin_line(self, name: str) -> int | None:
        """The main.cf line a value comes from: its own setting, else the
        first setting its default refers to ($name chains followed)."""
        todo, seen = [name], set[str]()
        while todo:
            current = todo.pop(0)
            if current in self.lines:
                return self.lines[current]
            if current in seen or len(seen) > MAX_EXPANSION_DEPTH:
                continue
            seen.add(current)
            param = declared(current)
            todo += _REF_NAMES.findall(self.explicit.get(current, param.default if param else ""))
            if current == "mydomain":          # raw() derives it from myhostname
                todo.append("myhostname")
        return None


def load_config(config_dir: str | None = None, *, overrides: Mapping[str, str] | None = None) -> Config:
    """Read ``main.cf`` from the configuration directory.

    A missing main.cf is an empty one (every parameter at its default).
    """
    directory = config_dir_from(config_dir)
    path = os.path.join(directory, "main.cf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror}") from None
    cfg = Config(directory, main_cf=path)
    settings = parse_main_cf(text, path)
    referenced = {name for st in settings for name in _REF_NAMES.findall(st.value)}
    for setting in settings:
        if setting.name in BY_NAME and setting.name in ("config_directory",):
            cfg.warnings.append(f"{path}, line {setting.line}: {setting.name} cannot be set in main.cf; ignored")
            continue
        if declared(setting.name) is None and setting.name not in referenced:
            cfg.warnings.append(f"{path}, line {setting.line}: unused parameter: {setting.name}={setting.value}")
        cfg.explicit[setting.name] = setting.value
        cfg.lines[setting.name] = setting.line
    if overrides:
        cfg.explicit.update(overrides)
    return cfg
