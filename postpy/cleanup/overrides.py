"""cleanup: ``receive_override_options``, what a receiving service turns off.

Set per service (``-o receive_override_options=no_address_mappings`` on the
smtpd that takes mail back from a content filter, as Postfix's
FILTER_README does) or in main.cf.  smtpd and pickup read the parameter and
pass it to cleanup as the ``overrides`` attribute of the envelope (a
comma-separated list); cleanup decides with :class:`Overrides`, so the
words are defined once, here::

    no_address_mappings         no canonical, masquerade or virtual alias mapping
    no_header_body_checks       no header_checks, mime_header_checks,
                                nested_header_checks or body_checks
    no_unknown_recipient_checks (smtpd) no rejection of unknown recipients
    no_milters                  no milter applications

An unknown word is a configuration error (:func:`parse`).
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.config.maincf import ConfigError

ATTRIBUTE = "overrides"
WORDS = ("no_unknown_recipient_checks", "no_address_mappings", "no_header_body_checks", "no_milters")


def parse(value: str) -> tuple[str, ...]:
    """The words of a ``receive_override_options`` value (ConfigError on an unknown one)."""
    words = tuple(w.lower() for w in value.replace(",", " ").split())
    for word in words:
        if word not in WORDS:
            raise ConfigError(f"receive_override_options: unknown option {word!r} "
                              f"(known: {', '.join(WORDS)})")
    return words


@dataclass(frozen=True)
class Overrides:
    address_mappings: bool = True
    header_body_checks: bool = True
    unknown_recipient_checks: bool = True
    milters: bool = True

    @classmethod
    def from_words(cls, words: tuple[str, ...]) -> Overrides:
        return cls(address_mappings="no_address_mappings" not in words,
                   header_body_checks="no_header_body_checks" not in words,
                   unknown_recipient_checks="no_unknown_recipient_checks" not in words,
                   milters="no_milters" not in words)

    @classmethod
    def from_attrs(cls, attrs: dict[str, str]) -> Overrides:
        """From a cleanup envelope's attributes (unknown words ignored: the
        sender checked them against its own configuration)."""
        words = tuple(w for w in attrs.get(ATTRIBUTE, "").split(",") if w in WORDS)
        return cls.from_words(words)


def attribute(words: tuple[str, ...]) -> str:
    """The ``overrides`` attribute value for a cleanup envelope."""
    return ",".join(words)
