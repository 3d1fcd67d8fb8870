"""local: expand one recipient into the destinations that get the message.

Input: a recipient address whose domain qmgr routed to local (or none).
Output: a :class:`Plan` -- the :class:`Destination` list (mailboxes,
Maildirs, files, commands, addresses to forward to) and the
:class:`Failure` list (branches that cannot be delivered).  Nothing is
delivered here; :mod:`postpy.local.deliver` runs the plan.  Alias tables are
read as root; ``.forward`` and ``:include:`` files as the identity the
expansion acts for (:mod:`postpy.local.dotforward`).

For a local address (local(8) order; decisions use the local part folded
to lower case):

1. **Loop check**: the message already has ``Delivered-To:`` this address
   -> ``5.4.6 mail forwarding loop for ADDR``.  Expansion deeper than
   :data:`DEPTH_LIMIT` is reported the same way.
2. **Aliases** (``alias_maps``): ``user+ext`` first, then ``user``
   (``recipient_delimiter`` may hold several characters, the first one
   found splits; with ``owner_request_special``, ``owner-x`` and
   ``x-request`` are never split on ``-``).  Targets: addresses (a local
   one is expanded again, in this process; a remote one is forwarded),
   ``|command``, ``/file``, ``/dir/`` (Maildir), ``:include:/file``,
   ``\\user`` (that user's mailbox, no further expansion).  Commands and
   files act as the owner of the alias table file (``default_privs`` if
   root owns it).  An ``:include:`` file that group or others may write
   is refused (``4.3.5``, and a warning), as a ``.forward`` would be.  If ``owner-NAME`` exists, forwarded copies and the
   deliveries of this expansion use ``owner-NAME@$myorigin`` as sender
   (a null sender stays null).
3. **User**: no alias and no passwd entry -> ``mailbox_transport`` if set
   (it takes every mailbox, known user or not), else ``fallback_transport``
   if set, else ``5.1.1 unknown user: "name"``.
4. **~/.forward** (``forward_path``), acting as the user; ``~/path`` is a
   file in the user's home.
5. **Mailbox** of the user: with ``mailbox_transport``, a
   :data:`TRANSPORT` destination (the delivery is handed to that transport,
   :mod:`postpy.local.handoff`); otherwise written as that user, root's own
   mailbox as root (:meth:`postpy.local.settings.LocalSettings.mailbox_owner`),
   while everything else reached for root (commands and files from aliases
   or root's ``.forward``, root's ``mailbox_command``) runs as
   ``default_privs``.  ``\\user`` targets follow steps 3 and 5.

Self-reference (aliases(5)): an alias found again inside its own expansion
skips the alias step (so ``alice: alice, bob`` delivers to alice's mailbox
and to bob); a user listed in their own ``.forward`` gets the mailbox.
Reaching an alias that is an ancestor further up (``a: b``, ``b: a``) is
a loop: the user's mailbox if ``a`` is a user, else ``5.4.6``.

``|command`` and ``/file`` are honoured only where
``allow_mail_to_commands`` / ``allow_mail_to_files`` name the innermost
source (``alias``, ``forward``, ``include``); otherwise ``5.7.1 mail to
command is restricted``.  Duplicate destinations are dropped (first one
wins), and an address is expanded once per distinct situation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from postpy.local import dotforward
from postpy.local.outcome import DeliveryError
from postpy.local.privileges import Identity, acting_as, identity_of_uid
from postpy.local.settings import LocalSettings
from postpy.mail import address as addr
from postpy.tables import aliases_parser as ap
from postpy.tables.maps import LMDB_ALIASES, TableError, open_table, split_spec
from postpy.util import maillog

MAILBOX, MAILDIR, FILE, COMMAND, FORWARD = "mailbox", "maildir", "file", "command", "forward"
TRANSPORT = "transport"     # value: mailbox_transport or fallback_transport (transport[:nexthop])
ALIAS, DOTFORWARD, INCLUDE, TOP = "alias", "forward", "include", "recipient"
DEPTH_LIMIT = 50


@dataclass(frozen=True)
class LocalAddress:
    """A local address at one level of expansion."""

    address: str        # as delivered to: "alice+news@example.org"
    local: str          # folded local part with extension: "alice+news"
    user: str           # folded local part without extension: "alice"
    extension: str      # "news" ("" when none)
    domain: str         # folded domain ("" when none)


def split_local(address: str, delimiter: str, owner_special: bool = True) -> LocalAddress:
    local, domain = addr.split_address(address)
    folded = addr.unquote_local(local).lower()
    user, extension = folded, ""
    keep_whole = owner_special and "-" in delimiter and (
        folded.startswith("owner-") or folded.endswith("-request"))
    if delimiter and not keep_whole:
        found = [i for i in (folded.find(ch) for ch in delimiter) if i > 0]
        if found:
            at = min(found)
            user, extension = folded[:at], folded[at + 1:]
    return LocalAddress(address, folded, user, extension, domain.lower())


@dataclass(frozen=True)
class Destination:
    kind: str               # mailbox | maildir | file | command | forward | transport
    value: str              # user name, path, command line, or address
    privs: Identity         # who delivers (root only for root's own mailbox)
    rcpt: LocalAddress      # the address this is a delivery for (log to=, $RECIPIENT)
    sender: str             # envelope sender for this delivery
    source: str             # where it came from: recipient | alias | forward | include
    owner: Identity | None = None   # mailbox owner (kind mailbox)

    def key(self) -> tuple[str, ...]:
        """Duplicate-elimination key."""
        if self.kind == MAILBOX:
            return (MAILBOX, self.value)
        if self.kind == FORWARD:
            return (FORWARD, self.value.lower(), self.sender.lower())
        if self.kind == TRANSPORT:
            return (TRANSPORT, self.value, self.rcpt.address.lower())
        return (self.kind, self.value, str(self.privs.uid))


@dataclass(frozen=True)
class Failure:
    rcpt: LocalAddress
    error: DeliveryError


@dataclass
class Plan:
    destinations: list[Destination] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    source: str
    privs: Identity
    rcpt: LocalAddress
    sender: str
    depth: int
    ancestors: frozenset[tuple[str, str]] = frozenset()
    alias_key: str = ""     # the alias being expanded (self-reference test)
    home: str = ""          # for ~/path in .forward


class Resolver:
    """Expand recipients of one message (``delivered_to`` from its header)."""

    def __init__(self, settings: LocalSettings, delivered_to: frozenset[str], sender: str,
                 warn: Callable[[str], None] = maillog.warning) -> None:
        self.settings = settings
        self.delivered_to = delivered_to
        self.sender = sender
        self.warn = warn
        self._plan = Plan()
        self._keys: set[tuple[str, ...]] = set()
        self._seen: set[tuple[object, ...]] = set()

    def resolve(self, address: str) -> Plan:
        s = self.settings
        self._plan, self._keys, self._seen = Plan(), set(), set()
        rcpt = split_local(address, s.recipient_delimiter, s.owner_request_special)
        top = _Context(TOP, s.default_identity(), rcpt, self.sender, 0)
        self._local(rcpt, top)
        return self._plan

    # -- results --------------------------------------------------------------
    def _fail(self, rcpt: LocalAddress, dsn: str, text: str) -> None:
        self._plan.failures.append(Failure(rcpt, DeliveryError(dsn, text)))

    def _add(self, dest: Destination) -> None:
        key = dest.key()
        if key not in self._keys:
            self._keys.add(key)
            self._plan.destinations.append(dest)

    # -- one local address ----------------------------------------------------
    def _local(self, rcpt: LocalAddress, ctx: _Context) -> None:
        if ctx.depth > DEPTH_LIMIT or rcpt.address.lower() in self.delivered_to:
            self._fail(rcpt, "5.4.6", f"mail forwarding loop for {rcpt.address}")
            return
        keys = [rcpt.local] + ([rcpt.user] if rcpt.extension else [])
        repeated = next((k for k in keys if (ALIAS, k) in ctx.ancestors), None)
        skip_forward = (DOTFORWARD, rcpt.user) in ctx.ancestors
        seen = (rcpt.local, repeated is None, skip_forward, ctx.sender)
        if seen in self._seen:
            return
        self._seen.add(seen)
        if repeated is None:
            try:
                hit = self._alias_lookup(keys)
            except TableError as exc:
                self.warn(f"alias database unavailable: {exc}")
                self._fail(rcpt, "4.3.0", "alias database unavailable")
                return
            if hit is not None:
                self._expand_alias(rcpt, ctx, *hit)
                return
        user = self.settings.users(rcpt.user)
        if user is None:
            if repeated is not None and repeated != ctx.alias_key:
                self._fail(rcpt, "5.4.6", f"mail forwarding loop for {rcpt.address}")
            elif not self._hand_over(rcpt, ctx, known=False):
                self._fail(rcpt, "5.1.1", f'unknown user: "{rcpt.user}"')
            return
        acting = self.settings.acting(user)
        if not skip_forward and self._dot_forward(rcpt, ctx, user, acting):
            return
        if not self._hand_over(rcpt, ctx, known=True):
            self._add(Destination(MAILBOX, user.name, self.settings.mailbox_owner(user), rcpt,
                                  ctx.sender, ctx.source, user))

    def _hand_over(self, rcpt: LocalAddress, ctx: _Context, known: bool) -> bool:
        """A TRANSPORT destination instead of the mailbox: ``mailbox_transport``
        for anyone, ``fallback_transport`` for a user without passwd entry."""
        s = self.settings
        spec = s.mailbox_transport or ("" if known else s.fallback_transport)
        if not spec:
            return False
        self._add(Destination(TRANSPORT, spec, ctx.privs, rcpt, ctx.sender, ctx.source))
        return True

    # -- aliases ----------------------------------------------------------------
    def _alias_lookup(self, keys: list[str]) -> tuple[str, str, str] | None:
        """(key, value, table spec) of the first key any alias table has."""
        for key in keys:
            for spec in self.settings.alias_maps:
                value = open_table(spec).lookup(key)
                if value is not None:
                    return key, value, spec
        return None

    def _table_owner(self, spec: str) -> Identity | None:
        """Owner of the file behind a table spec (None: root, or no file)."""
        kind, name = split_spec(spec)
        while kind == "proxy":
            kind, name = split_spec(name)
        path = name + ".lmdb" if kind in LMDB_ALIASES else name if kind == "texthash" else ""
        if not path:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return None if st.st_uid == 0 else identity_of_uid(st.st_uid, st.st_gid)

    def _expand_alias(self, rcpt: LocalAddress, ctx: _Context, key: str, value: str,
                      spec: str) -> None:
        s = self.settings
        owner = self._table_owner(spec)
        privs = s.acting(owner) if owner is not None else s.default_identity()
        sender = ctx.sender
        if s.owner_request_special and sender and not key.startswith("owner-"):
            try:
                if self._alias_lookup([f"owner-{key}"]) is not None:
                    sender = f"owner-{key}@{s.myorigin}"
            except TableError:
                pass
        inner = _Context(ALIAS, privs, rcpt, sender, ctx.depth + 1,
                         ctx.ancestors | {(ALIAS, key)}, alias_key=key)
        self._targets(ap.parse_value(value), inner)

    # -- .forward -----------------------------------------------------------------
    def _dot_forward(self, rcpt: LocalAddress, ctx: _Context, user: Identity,
                     acting: Identity) -> bool:
        """Expand the user's .forward; False when there is none (or it is empty)."""
        paths = dotforward.forward_paths(self.settings, user, rcpt.address, rcpt.local,
                                         rcpt.extension, rcpt.domain)
        targets = dotforward.read_forward(self.settings, user, acting, paths, self.warn)
        if not targets:
            return False
        ancestors = ctx.ancestors | {(DOTFORWARD, rcpt.user), (ALIAS, rcpt.local), (ALIAS, rcpt.user)}
        inner = _Context(DOTFORWARD, acting, rcpt, ctx.sender, ctx.depth + 1, ancestors,
                         alias_key=rcpt.local, home=user.home)
        self._targets(targets, inner)
        return True

    # -- targets --------------------------------------------------------------------
    def _targets(self, targets: list[ap.Target], ctx: _Context) -> None:
        for target in targets:
            if target.kind == ap.ADDRESS:
                if target.value.startswith("~") and ctx.source == DOTFORWARD:
                    self._home_path(target.value, ctx)
                else:
                    self._address(target.value, ctx)
            elif target.kind == ap.MAILBOX:
                self._backslash(target.value, ctx)
            elif target.kind == ap.COMMAND:
                if self._allowed(self.settings.allow_mail_to_commands, ctx, "command"):
                    self._add(Destination(COMMAND, target.value, ctx.privs, ctx.rcpt, ctx.sender,
                                          ctx.source))
            elif target.kind == ap.FILE:
                self._file(target.value, ctx)
            elif target.kind == ap.INCLUDE:
                self._include(target.value, ctx)

    def _allowed(self, allowed: frozenset[str], ctx: _Context, what: str) -> bool:
        if ctx.source in allowed:
            return True
        self._fail(ctx.rcpt, "5.7.1", f"mail to {what} is restricted")
        return False

    def _file(self, path: str, ctx: _Context) -> None:
        if self._allowed(self.settings.allow_mail_to_files, ctx, "file"):
            kind = MAILDIR if path.endswith("/") else FILE
            self._add(Destination(kind, path, ctx.privs, ctx.rcpt, ctx.sender, ctx.source))

    def _home_path(self, value: str, ctx: _Context) -> None:
        if not value.startswith("~/"):
            self._fail(ctx.rcpt, "5.3.5", f"unsupported destination in .forward: {value}")
            return
        self._file(os.path.join(ctx.home or "/", value[2:]), ctx)

    def _address(self, text: str, ctx: _Context) -> None:
        """A target address: expand it here when local, else forward it."""
        local, at, domain = text.rpartition("@")
        if not at:
            local, domain = text, ""
        full = addr.join_address(local, domain or self.settings.myorigin)
        if not self.settings.is_local_domain(domain or self.settings.myorigin):
            self._add(Destination(FORWARD, full, ctx.privs, ctx.rcpt, ctx.sender, ctx.source))
            return
        s = self.settings
        rcpt = split_local(full, s.recipient_delimiter, s.owner_request_special)
        self._local(rcpt, replace(ctx, depth=ctx.depth + 1))

    def _backslash(self, name: str, ctx: _Context) -> None:
        """``\\user``: that user's mailbox, no alias or .forward."""
        local = name.rpartition("@")[0] if "@" in name else name
        user = self.settings.users(local.lower())
        domain = ctx.rcpt.domain or self.settings.myorigin
        rcpt = split_local(addr.join_address(local.lower(), domain), "")
        if self._hand_over(rcpt, ctx, known=user is not None):
            return
        if user is None:
            self._fail(rcpt, "5.1.1", f'unknown user: "{local.lower()}"')
            return
        self._add(Destination(MAILBOX, user.name, self.settings.mailbox_owner(user), rcpt,
                              ctx.sender, ctx.source, user))

    def _include(self, path: str, ctx: _Context) -> None:
        if not path.startswith("/"):
            self._fail(ctx.rcpt, "5.3.5", f":include: needs an absolute path: {path}")
            return
        if (INCLUDE, path) in ctx.ancestors:
            self.warn(f"{path}: includes itself: ignored")
            return
        try:
            with acting_as(ctx.privs):
                text, st = dotforward.read_text(path)
        except OSError as exc:
            self.warn(f"cannot open include file {path}: {exc.strerror or exc}")
            self._fail(ctx.rcpt, "5.3.0", f"cannot open include file {path}: {exc.strerror or exc}")
            return
        problem = dotforward.unsafe(st)
        if problem:
            self.warn(f"include file {path}: {problem}: refused")
            self._fail(ctx.rcpt, "4.3.5", f"mail system configuration error: include file "
                                          f"{path} is {problem}")
            return
        privs = ctx.privs
        if st.st_uid != 0:
            privs = self.settings.acting(identity_of_uid(st.st_uid, st.st_gid))
        inner = replace(ctx, source=INCLUDE, privs=privs, depth=ctx.depth + 1,
                        ancestors=ctx.ancestors | {(INCLUDE, path)})
        self._targets(ap.parse_include(text), inner)
