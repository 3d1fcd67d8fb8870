"""``postpy check``: name every configured lookup table that cannot be opened.

A table that is missing or unreadable makes every lookup in it a temporary
failure (451 at RCPT, deferred deliveries), so check names it before mail
piles up.  Checked: ``alias_database`` and every ``*_maps`` parameter that
has a value (``alias_maps``, ``local_recipient_maps``, ``transport_maps``,
...), each table once.  The result is a list of warnings in the words the
daemons log (:func:`postpy.tables.maps.unavailable`).
"""

from __future__ import annotations

from postpy.config.maincf import Config, ConfigError
from postpy.config.params import BY_NAME
from postpy.tables.maps import TableError, open_table, unavailable


def table_parameters(cfg: Config) -> list[str]:
    """The parameters that name lookup tables, sorted."""
    names = {name for name in (*BY_NAME, *cfg.explicit) if name.endswith("_maps")}
    return sorted(names | {"alias_database"})


def unavailable_tables(cfg: Config) -> list[str]:
    """One warning per configured table that cannot be opened."""
    problems: list[str] = []
    seen: set[str] = set()
    for name in table_parameters(cfg):
        try:
            specs = cfg.get_list(name)
        except ConfigError:
            continue            # reported by cfg.validate()
        for spec in specs:
            if spec in seen:
                continue
            seen.add(spec)
            try:
                open_table(spec, warn=False)
            except TableError as exc:
                problems.append(f"{name}: {unavailable(spec, exc)}")
    return problems
