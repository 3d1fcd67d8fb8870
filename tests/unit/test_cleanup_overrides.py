"""receive_override_options: the words, and what cleanup makes of the attribute."""

from __future__ import annotations

import pytest

from postpy.cleanup.overrides import Overrides, attribute, parse
from postpy.config.maincf import ConfigError


@pytest.mark.parametrize(("value", "words"), [
    ("", ()),
    ("no_address_mappings", ("no_address_mappings",)),
    ("no_unknown_recipient_checks, no_header_body_checks,no_address_mappings",
     ("no_unknown_recipient_checks", "no_header_body_checks", "no_address_mappings")),
    ("NO_MILTERS", ("no_milters",)),
])
def test_parse(value: str, words: tuple[str, ...]) -> None:
    assert parse(value) == words


@pytest.mark.parametrize("value", ["no_such_option", "no_address_mappings, x", "no-milters"])
def test_unknown_word_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="receive_override_options: unknown option"):
        parse(value)


def test_attribute_round_trip() -> None:
    words = parse("no_address_mappings no_header_body_checks")
    got = Overrides.from_attrs({"overrides": attribute(words)})
    assert got == Overrides(address_mappings=False, header_body_checks=False)
    assert Overrides.from_attrs({}) == Overrides()
    # Unknown words in the attribute (a newer client) are ignored, never fatal.
    assert Overrides.from_attrs({"overrides": "bogus,no_milters"}) == Overrides(milters=False)
