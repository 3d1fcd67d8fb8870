"""local: the main.cf parameters local delivery reads, read once at start.

Built by :func:`LocalSettings.from_config` in the daemon (and directly by
tests).  Two parameters are read *unexpanded*, because local expands them
itself per recipient: ``forward_path`` (``$home``, ``$user``,
``$extension``, ``$recipient``, ``$domain``, ``$local``, ``$shell`` and
``${recipient_delimiter}``, see :func:`expand_local`) and
``mailbox_command``, which Postfix passes to the shell as written so that
``"$EXTENSION"`` reaches the shell (the command's environment has it).

``users`` looks a user name up (the passwd database by default; tests
substitute their own), and ``default_identity`` is the ``default_privs``
user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from postpy.config.maincf import Config, split_list
from postpy.local import privileges
from postpy.local.privileges import Identity
from postpy.tables.maps import TableError, open_table
from postpy.util import maillog, privs

UNDEFINED = "\x00undefined\x00"


def _spool_directory(value: str) -> str:
    """Normalized, keeping a trailing ``/`` (Maildir-style spool, as in Postfix)."""
    if not value:
        return value
    path = os.path.normpath(value)
    return path + "/" if value.endswith("/") and path != "/" else path


@dataclass
class LocalSettings:
    cfg: Config
    myhostname: str = "localhost"
    myorigin: str = "localhost"
    mydestination: list[str] = field(default_factory=list)
    alias_maps: list[str] = field(default_factory=list)
    forward_path: list[str] = field(default_factory=list)
    home_mailbox: str = ""
    mail_spool_directory: str = "/var/mail"
    mailbox_command: str = ""
    mailbox_transport: str = ""         # transport[:nexthop] for every mailbox (local.handoff)
    fallback_transport: str = ""        # transport[:nexthop] for users without passwd entry
    mailbox_size_limit: int = 0
    recipient_delimiter: str = ""
    command_time_limit: float = 1000.0
    allow_mail_to_commands: frozenset[str] = frozenset({"alias", "forward"})
    allow_mail_to_files: frozenset[str] = frozenset({"alias", "forward"})
    prepend_delivered_header: frozenset[str] = frozenset({"command", "file", "forward"})
    owner_request_special: bool = True
    duplicate_filter_limit: int = 1000
    default_privs: str = "nobody"
    lock_attempts: int = 20
    lock_delay: float = 1.0
    stale_lock_time: float = 500.0
    ipc_timeout: float = 3600.0
    cleanup_socket: str = "private/cleanup"
    users: Callable[[str], Identity | None] = privileges.lookup_user

    @classmethod
    def from_config(cls, cfg: Config) -> LocalSettings:
        def words(name: str) -> frozenset[str]:
            return frozenset(w.lower() for w in cfg.get_list(name))

        return cls(
            cfg=cfg,
            myhostname=cfg.get("myhostname"),
            myorigin=cfg.get("myorigin"),
            mydestination=[d.lower() for d in cfg.get_list("mydestination")],
            alias_maps=cfg.get_list("alias_maps"),
            forward_path=split_list(cfg.raw("forward_path") or ""),
            home_mailbox=cfg.get("home_mailbox"),
            mail_spool_directory=_spool_directory(cfg.get("mail_spool_directory")),
            mailbox_command=(cfg.raw("mailbox_command") or "").strip(),
            mailbox_transport=cfg.get("mailbox_transport").strip(),
            fallback_transport=cfg.get("fallback_transport").strip(),
            mailbox_size_limit=cfg.get_size("mailbox_size_limit"),
            recipient_delimiter=cfg.get("recipient_delimiter"),
            command_time_limit=cfg.get_time("command_time_limit"),
            allow_mail_to_commands=words("allow_mail_to_commands"),
            allow_mail_to_files=words("allow_mail_to_files"),
            prepend_delivered_header=words("prepend_delivered_header"),
            owner_request_special=cfg.get_bool("owner_request_special"),
            duplicate_filter_limit=cfg.get_int("duplicate_filter_limit"),
            default_privs=cfg.get("default_privs"),
            lock_attempts=cfg.get_int("deliver_lock_attempts"),
            lock_delay=cfg.get_time("deliver_lock_delay"),
            stale_lock_time=cfg.get_time("stale_lock_time"),
            ipc_timeout=cfg.get_time("ipc_timeout"),
        )

    # -- identities ---------------------------------------------------------
    def default_identity(self) -> Identity:
        """The ``default_privs`` user (must exist when running as root)."""
        if not privileges.root_mode():
            return privs.current_identity()
        who = self.users(self.default_privs)
        if who is None:
            raise privs.PrivilegeError(f"default_privs: unknown user: {self.default_privs}")
        if who.uid == 0:
            raise privs.PrivilegeError(f"default_privs: user {self.default_privs} has uid 0")
        return who

    def acting(self, who: Identity) -> Identity:
        """The identity that really delivers for ``who`` (never root): commands,
        files and ``.forward`` targets."""
        if not privileges.root_mode():
            return privs.current_identity()
        if who.uid == 0:
            return self.default_identity()
        return who

    def mailbox_owner(self, who: Identity) -> Identity:
        """Who writes ``who``'s own mailbox: the user, root included (Postfix
        writes root's mailbox as root); the current user in embedded mode."""
        if not privileges.root_mode():
            return privs.current_identity()
        return who

    @property
    def spool_maildir(self) -> bool:
        """``mail_spool_directory`` ends in ``/``: mailboxes there are Maildirs."""
        return self.mail_spool_directory.endswith("/")

    # -- addresses ----------------------------------------------------------
    def is_local_domain(self, domain: str) -> bool:
        """Is ``domain`` one of ``mydestination`` (names or lookup tables)?"""
        domain = domain.lower().rstrip(".")
        for entry in self.mydestination:
            if ":" in entry or entry.startswith("/"):
                try:
                    if open_table(entry).lookup(domain) is not None:
                        return True
                except TableError as exc:
                    maillog.warning(f"mydestination: {exc}")
            elif entry.rstrip(".") == domain:
                return True
        return False

    def expand_local(self, text: str, names: Mapping[str, str]) -> str | None:
        """``$name`` expansion with local's per-recipient names.

        A name given as "" is undefined: Postfix skips a ``forward_path``
        element that needs an undefined name, and so does this (None).
        """
        extra = {k: (v if v else UNDEFINED) for k, v in names.items()}
        extra.setdefault("recipient_delimiter", self.recipient_delimiter or UNDEFINED)
        value = self.cfg.expand(text, extra)
        if UNDEFINED in value:
            return None
        return value
