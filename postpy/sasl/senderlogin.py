"""Which login may use which envelope sender: ``smtpd_sender_login_maps``.

The tables map a MAIL FROM address to the SASL login names that own it
(a comma or space separated list)::

    alice@example.org     alice
    @example.org          admin          (every address in the domain)
    sales@example.org     alice, bob

For a sender ``user+ext@domain`` the keys tried, in order, are
``user+ext@domain``, ``user@domain`` (the ``recipient_delimiter`` extension
removed), then ``user+ext`` and ``user`` when ``domain`` is one of ours
(``myorigin`` or ``mydestination``), then ``@domain``; the first key found
gives the owners.  Login names are compared without regard to case.

Restrictions (in ``smtpd_relay_restrictions`` or
``smtpd_recipient_restrictions``, evaluated at RCPT with the transaction's
sender):

``reject_authenticated_sender_login_mismatch``
    an authenticated client whose login does not own the sender (including a
    sender no table lists, and the null sender) is refused with
    ``553 5.7.1 <addr>: Sender address rejected: not owned by user LOGIN``.
``reject_unauthenticated_sender_login_mismatch``
    a client that did not authenticate may not use a sender that some login
    owns: ``553 5.7.1 <addr>: Sender address rejected: not logged in``.
``reject_sender_login_mismatch``
    both.

A table that fails answers ``451 4.3.0`` so the client retries later.
"""

from __future__ import annotations

from dataclasses import dataclass

from postpy.config.maincf import Config, split_list
from postpy.tables.maps import TableError, lookup_in_maps

AUTHENTICATED = "reject_authenticated_sender_login_mismatch"
UNAUTHENTICATED = "reject_unauthenticated_sender_login_mismatch"
BOTH = "reject_sender_login_mismatch"
RESTRICTIONS = frozenset({AUTHENTICATED, UNAUTHENTICATED, BOTH})


@dataclass(frozen=True)
class Refusal:
    code: int
    text: str       # enhanced status code and text


@dataclass
class SenderLogin:
    maps: list[str]
    local_domains: frozenset[str] = frozenset()
    recipient_delimiter: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> SenderLogin:
        domains = {cfg.get("myorigin")} | set(cfg.get_list("mydestination"))
        return cls(maps=cfg.get_list("smtpd_sender_login_maps"),
                   local_domains=frozenset(d.lower().rstrip(".") for d in domains if d),
                   recipient_delimiter=cfg.get("recipient_delimiter"))

    def keys(self, sender: str) -> list[str]:
        local, at, domain = sender.rpartition("@")
        if not at:
            local, domain = sender, ""
        bare = local
        if self.recipient_delimiter:
            cut = min((i for i, ch in enumerate(local) if ch in self.recipient_delimiter), default=-1)
            if cut > 0:
                bare = local[:cut]
        locals_ = [local] if bare == local else [local, bare]
        keys = [f"{part}@{domain}" for part in locals_] if domain else []
        if not domain or domain.lower().rstrip(".") in self.local_domains:
            keys += locals_
        if domain:
            keys.append(f"@{domain}")
        return keys

    def owners(self, sender: str) -> list[str] | None:
        """The logins that own ``sender``; None when no table lists it.
        Raises TableError when a table cannot be read."""
        if not sender or not self.maps:
            return None
        for key in self.keys(sender):
            value = lookup_in_maps(self.maps, key)
            if value is not None:
                return [name for name in split_list(value) if name]
        return None

    def check(self, restriction: str, sender: str, login: str) -> Refusal | None:
        """The refusal for this sender and login (``""``: not authenticated)."""
        try:
            owners = self.owners(sender)
        except TableError:
            return Refusal(451, f"4.3.0 <{sender}>: Sender address rejected: "
                                "Server configuration error")
        if login and restriction in (AUTHENTICATED, BOTH):
            if owners is None or login.casefold() not in {o.casefold() for o in owners}:
                return Refusal(553, f"5.7.1 <{sender}>: Sender address rejected: "
                                    f"not owned by user {login}")
        if not login and restriction in (UNAUTHENTICATED, BOTH) and owners:
            return Refusal(553, f"5.7.1 <{sender}>: Sender address rejected: not logged in")
        return None
