"""The parameter table (postpy.config.params): well-formed, complete, defaults valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.config.params import BY_NAME, PARAMS, READ_ONLY, Param

TYPES = {"str", "int", "bool", "time", "list", "size"}

# $names that local(8) supplies when it expands forward_path and the like.
LOCAL_NAMES = {"home", "user", "extension", "recipient", "domain", "local", "shell", "mailbox",
               # ... and those smtpd supplies to default_rbl_reply and rbl_reply_maps
               "rbl_code", "rbl_class", "rbl_what", "rbl_domain", "rbl_reason"}

# Parameters DESIGN.md names as part of the configuration surface.
DESIGN_NAMES = """
myhostname mydomain myorigin mydestination mynetworks inet_interfaces relayhost
queue_directory mail_owner alias_maps alias_database home_mailbox mail_spool_directory
mailbox_command recipient_delimiter message_size_limit smtpd_relay_restrictions
smtpd_recipient_restrictions maximal_queue_lifetime minimal_backoff_time
maximal_backoff_time queue_run_delay default_destination_concurrency_limit
max_idle max_use maillog_file syslog_name
""".split()


@pytest.mark.parametrize("param", PARAMS, ids=lambda p: p.name)
def test_param_is_well_formed(param: Param) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_]+", param.name)
    assert param.type in TYPES
    assert param.description.strip(), "every parameter needs a one-line description"
    if param.min is not None or param.max is not None:
        assert param.type in ("int", "size", "time"), "bounds on a non-numeric parameter"
    if param.min is not None and param.max is not None:
        assert param.min <= param.max


def test_names_unique_and_indexed() -> None:
    names = [p.name for p in PARAMS]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)
    assert READ_ONLY <= set(BY_NAME)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_parameters_present(name: str) -> None:
    assert name in BY_NAME


def test_default_references_are_known() -> None:
    ref = re.compile(r"\$(?:\{([A-Za-z0-9_]+)|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))")
    for param in PARAMS:
        for m in ref.finditer(param.default):
            name = next(g for g in m.groups() if g)
            assert name in BY_NAME or name in LOCAL_NAMES, f"{param.name}: ${name} is undefined"


def test_every_default_converts_with_its_type(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path))
    getters = {"int": cfg.get_int, "size": cfg.get_size, "bool": cfg.get_bool,
               "time": cfg.get_time, "list": cfg.get_list, "str": cfg.get}
    for param in PARAMS:
        getters[param.type](param.name)          # raises ConfigError on a bad default
    assert cfg.validate() == []


@pytest.mark.parametrize("param", [p for p in PARAMS if p.type == "bool"], ids=lambda p: p.name)
def test_bool_defaults_are_yes_or_no(param: Param) -> None:
    assert param.default in ("yes", "no")


def test_every_parameter_the_code_reads_is_in_the_table() -> None:
    """postconf -d must list every parameter postpy uses: scan the sources."""
    root = Path(__file__).resolve().parents[2] / "postpy"
    pattern = re.compile(r"\bcfg\.get(?:_int|_bool|_time|_list|_size|_path)?\(\s*\"([a-z0-9_]+)\"")
    used = {name for path in root.rglob("*.py") for name in pattern.findall(path.read_text())}
    assert len(used) > 50                              # the scan itself works
    missing = sorted(used - set(BY_NAME))
    assert missing == [], f"parameters read but not declared in params.py: {missing}"
