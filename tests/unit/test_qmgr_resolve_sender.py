"""Sender-dependent routing in postpy.qmgr.resolve: sender_dependent_relayhost_maps and
sender_dependent_default_transport_maps (keys sender, @domain, <> for the null sender; DUNNO)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postpy.config.maincf import Config
from postpy.qmgr.resolve import Route, resolve
from postpy.tables.maps import clear_cache

BASE = {"myhostname": "mx.test.example", "mydestination": "$myhostname, localhost",
        "inet_interfaces": "127.0.0.1", "relayhost": "[global.example]"}
RELAYS = ("inline:{ alice@a.example=[alice-relay.example]:587, @a.example=[a-relay.example], "
          "<>=[bounce-relay.example], dunno@a.example=DUNNO }")
TRANSPORTS = "inline:{ @t.example=special, @th.example=special:[hop.example] }"


def config(tmp_path: Path, **params: str) -> Config:
    clear_cache()
    return Config(str(tmp_path), {**BASE, **params})


@pytest.mark.parametrize("sender, expected", [
    ("alice@a.example", Route("smtp", "[alice-relay.example]:587")),
    ("Bob@A.example", Route("smtp", "[a-relay.example]")),
    ("", Route("smtp", "[bounce-relay.example]")),
    ("dunno@a.example", Route("smtp", "[global.example]")),       # DUNNO keeps relayhost
    ("carol@c.example", Route("smtp", "[global.example]")),
    (None, Route("smtp", "[global.example]")),                    # sender unknown (sendmail -bv)
    ("x@t.example", Route("special", "[a-relay.example]")),     # relayhost map too, see below
    ("x@th.example", Route("special", "[hop.example]")),          # a transport's next hop wins
])
def test_sender_dependent_routes(tmp_path: Path, sender: str | None, expected: Route) -> None:
    relays = RELAYS.replace("}", ", @t.example=[a-relay.example] }")
    cfg = config(tmp_path, sender_dependent_relayhost_maps=relays,
                 sender_dependent_default_transport_maps=TRANSPORTS)
    assert resolve(cfg, "rcpt@remote.example", sender) == expected


def test_transport_maps_and_local_mail_are_not_affected(tmp_path: Path) -> None:
    cfg = config(tmp_path, sender_dependent_relayhost_maps=RELAYS,
                 transport_maps="inline:{ remote.example=smtp:[fixed.example] }")
    assert resolve(cfg, "rcpt@remote.example", "alice@a.example") == Route("smtp", "[fixed.example]")
    assert resolve(cfg, "root@localhost", "alice@a.example").transport == "local"


def test_unreadable_table_defers(tmp_path: Path) -> None:
    cfg = config(tmp_path, sender_dependent_relayhost_maps=f"lmdb:{tmp_path}/missing")
    route = resolve(cfg, "rcpt@remote.example", "alice@a.example")
    assert route.retry and route.error.startswith("4.3.0 sender_dependent_relayhost_maps lookup failure")
