"""Postfix domain lists: ``virtual_alias_domains`` and parameters like it.

A domain list decides whether a domain belongs to an address class (smtpd's
RCPT check and qmgr's routing ask it for ``virtual_alias_domains``).  Its
words, separated by commas and/or white space, are tried in order and the
first that matches decides:

``example.com``
    that domain only (case-insensitive; a trailing dot is ignored);
``.example.com``
    any subdomain of example.com, not example.com itself;
``type:table``
    the domain is a lookup key of the table (the value is ignored), or a
    parent domain with a leading dot is (``.example.com``), as Postfix
    matches tables in lists that do not treat a parent domain as matching
    its subdomains;
``/file/name``
    the words of that file (``#`` comments, blank lines), read once;
``!pattern``
    a domain the pattern matches is *not* in the list.

A table that fails raises :class:`postpy.tables.maps.TableError` (the
caller answers with a temporary failure); a file that cannot be read is
one too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.config.maincf import split_list
from postpy.tables.maps import TableError, open_table, split_spec

MAX_FILE_DEPTH = 5          # /file/name patterns inside /file/name files


@dataclass(frozen=True)
class _Pattern:
    negate: bool
    kind: str               # "name" | "subdomains" | "table"
    text: str               # lower-case domain, ".parent", or the table spec


def _read_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError as exc:
        raise TableError(f"open {path}: {exc.strerror}") from None
    words: list[str] = []
    for line in text.splitlines():
        words.extend(split_list(line.split("#", 1)[0]))
    return words


def _patterns(words: list[str], depth: int = 0) -> list[_Pattern]:
    found: list[_Pattern] = []
    for word in words:
        negate = word.startswith("!")
        text = word[1:] if negate else word
        if not text:
            continue
        if text.startswith("/"):
            if depth >= MAX_FILE_DEPTH:
                raise TableError(f"{text}: domain list files nested too deep")
            inner = _patterns(_read_file(text), depth + 1)
            found.extend(_Pattern(negate != p.negate, p.kind, p.text) for p in inner)
        elif ":" in text and split_spec(text, "")[0]:
            found.append(_Pattern(negate, "table", text))
        elif text.startswith("."):
            found.append(_Pattern(negate, "subdomains", text.lower().rstrip(".")))
        else:
            found.append(_Pattern(negate, "name", text.lower().rstrip(".")))
    return found


def _parent_keys(domain: str) -> list[str]:
    """``a.b.example`` -> ``.b.example``, ``.example``."""
    labels = domain.split(".")
    return ["." + ".".join(labels[i:]) for i in range(1, len(labels))]


@dataclass
class DomainList:
    """A parsed domain list; :meth:`matches` answers for one domain."""

    patterns: list[_Pattern] = field(default_factory=list)

    @classmethod
    def parse(cls, words: list[str]) -> DomainList:
        """The list of ``words`` (a parameter's value, split); raises
        TableError when a ``/file/name`` cannot be read."""
        return cls(_patterns(words))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, domain: str) -> bool:
        """Is ``domain`` in the list?  Raises TableError when a table fails."""
        domain = domain.lower().rstrip(".")
        if not domain:
            return False
        for pattern in self.patterns:
            if self._match(pattern, domain):
                return not pattern.negate
        return False

    @staticmethod
    def _match(pattern: _Pattern, domain: str) -> bool:
        if pattern.kind == "name":
            return domain == pattern.text
        if pattern.kind == "subdomains":
            return domain.endswith(pattern.text)
        table = open_table(pattern.text)
        return any(table.lookup(key) is not None for key in (domain, *_parent_keys(domain)))
