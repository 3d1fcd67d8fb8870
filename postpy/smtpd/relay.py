"""Who may send mail where: mynetworks, relay domains, local recipients.

The domain facts the restrictions of :mod:`postpy.smtpd.restrictions`
ask about, and the recipient validation that follows them:

1. ``reject_unauth_destination`` / ``defer_unauth_destination``
   (:meth:`RelayPolicy._unauth_destination`): is the recipient's domain
   local, virtual or a relay domain, and is its local part free of relay
   tricks?  ``reject_sender_login_mismatch`` and its halves use
   :attr:`RelayPolicy.sender_login` (``smtpd_sender_login_maps``, see
   :mod:`postpy.sasl.senderlogin`).  :meth:`RelayPolicy.check_config`
   refuses an open relay (neither list has ``reject_unauth_destination``,
   ``defer_unauth_destination`` or ``reject``).  :meth:`RelayPolicy.check`
   evaluates the sender, relay and recipient lists without DNS or policy
   servers, for tools and unit tests; smtpd itself runs every list through
   :class:`postpy.smtpd.restrictions.Restrictions`.
2. The recipient validation of ``smtpd_reject_unlisted_recipient``: a
   recipient in a local domain must be in ``local_recipient_maps`` (an empty
   setting accepts everyone), so the system never accepts mail it can only
   bounce.  Before that, :mod:`postpy.smtpd.mapped` accepts recipients
   cleanup's canonical and virtual alias tables map and refuses unknown
   users of virtual alias domains, then :mod:`postpy.smtpd.recipients`
   refuses relocated users and unknown recipients of virtual mailbox and
   relay domains.

Relay tricks.  An address routes mail somewhere other than its domain when
its source route is honoured (``@a:b@c``), or its local part asks for it:
``user%other@local`` (percent hack), ``other!user@local`` (bang path) and
``"user@other"@local`` (quoted ``@``).  The route is stripped when the path
is parsed (:func:`postpy.mail.address.parse_path`), so the real domain is
checked.  For the rest, ``reject_unauth_destination`` treats a local part
with ``%``, ``!`` or ``@`` as a relay attempt when ``allow_untrusted_routing
= no`` (the default), whatever the domain: such mail is refused with
``554 5.7.1 Relay access denied`` unless the client is trusted.

A domain is local when qmgr would deliver it here: the one definition is
:func:`postpy.qmgr.resolve.is_local_destination` (``mydestination``, no
domain at all, or the address literal of one of this host's addresses in
``inet_interfaces``/``proxy_interfaces``), so a recipient accepted as local
is never routed to the smtp client.  It is relayable when it is in
``relay_domains``, or a subdomain of an entry there.  A domain of
``virtual_mailbox_domains`` is a destination too (qmgr routes it to
``virtual_transport``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from postpy.mail.address import has_routing, split_address, unquote_local
from postpy.qmgr.resolve import is_local_destination
from postpy.sasl import senderlogin
from postpy.sasl.senderlogin import SenderLogin
from postpy.smtpd import replies
from postpy.smtpd.mapped import MappedRecipients
from postpy.smtpd.recipients import RecipientTables
from postpy.smtpd.replies import Reply
from postpy.tables.maps import TableError, lookup_in_maps

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RELAY_GUARDS = frozenset({"reject", "reject_unauth_destination", "defer_unauth_destination"})


class RelayConfigError(Exception):
    """A relay setting that cannot work; str() names the parameter."""


def parse_ip(text: str) -> IPAddress | None:
    """A client address as an IP; IPv4-mapped IPv6 becomes IPv4, a zone is dropped."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_relay_domains(relay_domains: tuple[str, ...] | list[str], domain: str) -> bool:
    """Is ``domain`` an entry of ``relay_domains`` or a subdomain of one (the
    entries lower case; a leading dot is ignored)?  ``sendmail -bv`` asks too."""
    domain = domain.lower()
    for entry in relay_domains:
        entry = entry.lstrip(".")
        if domain == entry or domain.endswith("." + entry):
            return True
    return False


@dataclass
class NetworkList:
    """An ordered list of networks; ``!net`` excludes (first match wins)."""

    entries: list[tuple[bool, Network]] = field(default_factory=list)

    @classmethod
    def parse(cls, words: list[str], name: str = "mynetworks") -> tuple[NetworkList, list[str]]:
        """The list and warnings for entries that are not networks."""
        nets = cls()
        warnings: list[str] = []
        for word in words:
            negate = word.startswith("!")
            text = word[1:] if negate else word
            if text.startswith("["):
                close = text.find("]")
                text = text[1:close] + text[close + 1:] if close > 0 else text
            try:
                nets.entries.append((negate, ipaddress.ip_network(text, strict=False)))
            except ValueError:
                warnings.append(f"{name}: ignoring unsupported entry \"{word}\" (CIDR networks only)")
        return nets, warnings

    def matches(self, addr: str) -> bool:
        ip = parse_ip(addr)
        if ip is None:
            return False
        for negate, net in self.entries:
            if ip.version == net.version and ip in net:
                return not negate
        return False


@dataclass
class Recipient:
    """The facts a restriction looks at."""

    written: str            # as written inside <>, for replies and logs
    address: str            # mailbox with any source route removed
    client_addr: str
    server_addr: str = ""   # the address the client connected to
    trusted: bool = False   # client in mynetworks
    sender: str = ""        # the transaction's MAIL FROM address
    sasl_username: str = "" # the AUTH login, "" when the client did not log in

    @property
    def local(self) -> str:
        return unquote_local(split_address(self.address)[0])

    @property
    def domain(self) -> str:
        return split_address(self.address)[1].lower()


@dataclass
class RelayPolicy:
    mydestination: frozenset[str]
    relay_domains: tuple[str, ...]
    relay_restrictions: list[str]
    recipient_restrictions: list[str]
    local_recipient_maps: list[str]
    recipient_delimiter: str = ""
    allow_untrusted_routing: bool = False
    reject_unlisted: bool = True        # smtpd_reject_unlisted_recipient
    sender_restrictions: list[str] = field(default_factory=list)
    sender_login: SenderLogin = field(default_factory=lambda: SenderLogin(maps=[]))
    own_addresses: frozenset[IPAddress] = frozenset()   # local address literals
    tables: RecipientTables = field(default_factory=RecipientTables)   # virtual, relay, relocated
    mapped: MappedRecipients = field(default_factory=MappedRecipients)  # canonical, virtual alias

    def check_config(self) -> list[str]:
        """Raise RelayConfigError for an open relay; return warnings."""
        both = self.relay_restrictions + self.recipient_restrictions
        if not RELAY_GUARDS & set(both):
            raise RelayConfigError(
                "smtpd_relay_restrictions and smtpd_recipient_restrictions: specify at least "
                "one working instance of reject_unauth_destination, defer_unauth_destination or reject")
        every = self.sender_restrictions + both
        warnings = []
        if senderlogin.RESTRICTIONS & set(every) and not self.sender_login.maps:
            warnings.append("reject_sender_login_mismatch without smtpd_sender_login_maps: "
                            "no sender is owned by any login")
        return warnings

    # -- domains ------------------------------------------------------------
    def is_local_domain(self, domain: str) -> bool:
        return is_local_destination(domain, self.mydestination, self.own_addresses)

    def is_relay_domain(self, domain: str) -> bool:
        return in_relay_domains(self.relay_domains, domain)

    # -- restrictions ---------------------------------------------------------
    def _unauth_destination(self, rcpt: Recipient, code: int) -> Reply | None:
        routed = has_routing(rcpt.local) and not self.allow_untrusted_routing
        try:
            virtual = self.tables.is_virtual_mailbox_domain(rcpt.domain) \
                or self.mapped.is_alias_domain(rcpt.domain)
        except TableError:
            return replies.lookup_failure(rcpt.written)
        if (self.is_local_domain(rcpt.domain) or virtual
                or self.is_relay_domain(rcpt.domain)) and not routed:
            return None
        if code == 450:
            return Reply.of(450, f"4.7.1 <{rcpt.written}>: Relay access denied")
        return replies.relay_denied(rcpt.written)

    def check(self, rcpt: Recipient) -> Reply | None:
        """The reject reply for this recipient, or None to accept it (the
        sender, relay and recipient lists, then unlisted recipients)."""
        from postpy.smtpd.restrictions import check_recipient_now  # it imports this module

        return check_recipient_now(self, rcpt)

    # -- local recipients -----------------------------------------------------
    def unlisted(self, rcpt: Recipient) -> Reply | None:
        """550 5.1.1 for an unknown recipient in a local domain (and, first,
        the checks of :mod:`postpy.smtpd.recipients`)."""
        local = self.is_local_domain(rcpt.domain)
        mapped = self.mapped.check(rcpt.written, rcpt.address, rcpt.domain, local=local)
        if mapped is not None:
            return mapped if mapped.is_error else None
        verdict = self.tables.check(rcpt.written, rcpt.address, rcpt.domain, local=local,
                                    relay_domain=not local and self.is_relay_domain(rcpt.domain))
        if verdict is not None or not local:
            return verdict
        try:
            known = self.known_local(rcpt.local, rcpt.domain)
        except TableError:
            return replies.lookup_failure(rcpt.written)
        return None if known else replies.user_unknown(rcpt.written)

    def lookup_keys(self, local: str, domain: str) -> list[str]:
        """Keys tried in local_recipient_maps: ``user+ext@domain``, ``user+ext``,
        then without the extension, then ``@domain``; all in lower case, as
        Postfix looks them up (``Root`` is ``root``, in passwd too)."""
        local, domain = local.lower(), domain.lower()
        locals_ = [local]
        if self.recipient_delimiter:
            cut = min((i for i, ch in enumerate(local) if ch in self.recipient_delimiter),
                      default=-1)
            if cut > 0:
                locals_.append(local[:cut])
        keys: list[str] = []
        for part in locals_:
            if domain:
                keys.append(f"{part}@{domain}")
            keys.append(part)
        if domain:
            keys.append(f"@{domain}")
        return keys

    def known_local(self, local: str, domain: str) -> bool:
        """Is ``local`` a recipient here?  Raises TableError when a table fails."""
        if not self.local_recipient_maps:
            return True
        return any(lookup_in_maps(self.local_recipient_maps, key) is not None
                   for key in self.lookup_keys(local, domain))
