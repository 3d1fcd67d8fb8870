"""qmgr's side of pipe transports: content_filter routes and per-transport limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.config.maincf import Config, load_config
from postpy.qmgr.filter import filter_route
from postpy.qmgr.resolve import Route


@pytest.mark.parametrize("value, expected", [
    ("", None),
    ("spamfilter:dummy", Route("spamfilter", "dummy")),
    ("scan:[127.0.0.1]:10025", Route("scan", "[127.0.0.1]:10025")),
    ("spamfilter:", Route("spamfilter", "test.example")),
    ("spamfilter", Route("spamfilter", "test.example")),
    (":dummy", Route("retry", "", "4.3.5 bad content_filter value: :dummy", retry=True)),
])
def test_filter_route(value: str, expected: Route | None) -> None:
    attrs = {"content_filter": value} if value else {}
    assert filter_route(attrs, "User@Test.Example") == expected


def test_per_transport_parameters(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("spamfilter_destination_recipient_limit = 1\n"
                                      "default_destination_recipient_limit = 7\n"
                                      "hang_time_limit = 2s\n")
    cfg = load_config(str(tmp_path))
    assert cfg.warnings == []                   # not "unused parameter"
    assert cfg.get_int("spamfilter_destination_recipient_limit") == 1
    assert cfg.get_int("dovecot_destination_recipient_limit") == 7
    assert cfg.get_int("dovecot_destination_concurrency_limit") == 20
    assert cfg.get_time("hang_time_limit") == 2
    assert cfg.get_time("procmail_time_limit") == 1000
    assert cfg.is_known("anything_destination_recipient_limit")
    assert not cfg.is_known("_destination_recipient_limit")
    assert cfg.validate() == []


def test_per_transport_bounds(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path), {"x_destination_recipient_limit": "0"})
    assert any("below the minimum" in e for e in cfg.validate())
