"""smtpd's configuration, read once per process from main.cf (+ ``-o``).

:meth:`Settings.from_config` converts every parameter smtpd uses into a
typed field, parses network lists and restriction lists, and loads the TLS
certificate.  master's ``-o`` overrides arrive in the Config the skeleton
built.  It runs before the privilege drop, so the TLS key may be readable
by root only.  Bad settings raise :class:`SettingsError`; the daemon then
exits with a fatal log line, as Postfix's smtpd does.

The restrictions (:class:`postpy.smtpd.restrictions.Restrictions`, with
their DNS resolver and policy server connections) are built here too.

The client limits (:class:`postpy.smtpd.limits.ClientLimits`, with the
process's anvil connection), the stress values of ``smtpd_timeout`` and
``smtpd_hard_error_limit`` and the process's session count
(:mod:`postpy.smtpd.stress`) live here too, and so does SMTP AUTH (:class:`postpy.sasl.server.SaslServer`, built only when
``smtpd_sasl_auth_enable = yes``: its password file is read here, before
the privilege drop).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from postpy.cleanup import overrides
from postpy.config.maincf import Config, ConfigError
from postpy.qmgr.resolve import own_addresses
from postpy.sasl.backend import BackendConfigError
from postpy.sasl.senderlogin import SenderLogin
from postpy.sasl.server import SaslServer
from postpy.smtpd import pregreet, stress, tls
from postpy.smtpd.limits import ClientLimits
from postpy.smtpd.mapped import MappedRecipients
from postpy.smtpd.milters import MilterSetup
from postpy.smtpd.recipients import RecipientTables
from postpy.smtpd.relay import NetworkList, RelayConfigError, RelayPolicy
from postpy.smtpd.restriction_config import RestrictionConfig
from postpy.smtpd.restrictions import Restrictions, unknown_names
from postpy.util import maillog

BARE_NEWLINE_POLICIES = ("normalize", "reject", "no")


class SettingsError(Exception):
    """A setting smtpd cannot work with; str() names it."""


@dataclass
class Settings:
    hostname: str
    banner: str
    relay: RelayPolicy
    mynetworks: NetworkList = field(default_factory=NetworkList)
    message_size_limit: int = 10240000
    line_length_limit: int = 2048
    command_line_limit: int = 2048
    recipient_limit: int = 1000
    timeout: float = 300.0
    starttls_timeout: float = 300.0
    hard_error_limit: int = 20
    soft_error_limit: int = 10
    error_sleep: float = 1.0
    connection_limit: int = 50
    connection_limit_exceptions: NetworkList = field(default_factory=NetworkList)
    bare_newline: str = "normalize"
    bare_newline_exclusions: NetworkList = field(default_factory=NetworkList)
    forbidden_commands: frozenset[str] = frozenset({"CONNECT", "GET", "POST"})
    disable_vrfy: bool = True
    smtputf8_enable: bool = True
    tls_context: ssl.SSLContext | None = None
    tls_watcher: tls.CertificateWatcher | None = None   # follows a renewed certificate
    tls_level: str = "none"             # none | may | encrypt
    tls_wrappermode: bool = False
    rewrite_all: bool = False           # local_header_rewrite_clients = static:all
    rewrite_mynetworks: bool = True     # ... = permit_mynetworks
    queue_minfree: int = 0
    content_filter: str = ""            # transport:nexthop recorded with each message
    overrides: tuple[str, ...] = ()     # receive_override_options words (cleanup.overrides)
    queue_path: str = "."               # statvfs target: the queue file system
    cleanup_path: str = "private/cleanup"
    ipc_timeout: float = 3600.0
    ipc_max_frame: int = 1024 * 1024
    sasl: SaslServer | None = None      # SMTP AUTH, when smtpd_sasl_auth_enable = yes
    milters: MilterSetup | None = None  # smtpd_milters (postpy.smtpd.milters)
    restrictions: Restrictions | None = None   # None: the relay lists alone (tests)
    warnings: list[str] = field(default_factory=list)
    service: str = "smtpd"              # master.cf service name (anvil idents, log lines)
    limits: ClientLimits | None = None  # anvil's limits; None: none set
    pregreet_delay: float = 0.0
    pregreet_action: str = "ignore"
    stress_timeout: float = 10.0        # smtpd_timeout with stress = yes
    stress_hard_error_limit: int = 1
    load: stress.Load = field(default_factory=stress.Load)

    def rules(self) -> Restrictions:
        """The restrictions; built from ``relay``'s lists when none were configured."""
        if self.restrictions is None:
            self.restrictions = Restrictions(RestrictionConfig(lists={
                "sender": self.relay.sender_restrictions, "relay": self.relay.relay_restrictions,
                "recipient": self.relay.recipient_restrictions}), self.relay)
        return self.restrictions

    def refresh_tls(self) -> None:
        """Per new connection: take a renewed certificate into use."""
        if self.tls_watcher is not None:
            self.tls_context = self.tls_watcher.current()

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        try:
            return cls._build(cfg)
        except (ConfigError, RelayConfigError, tls.TlsSetupError, BackendConfigError) as exc:
            raise SettingsError(str(exc)) from None

    @classmethod
    def _build(cls, cfg: Config) -> Settings:
        warnings: list[str] = []

        def networks(name: str) -> NetworkList:
            nets, problems = NetworkList.parse(cfg.get_list(name), name)
            warnings.extend(problems)
            return nets

        override_words = overrides.parse(cfg.get("receive_override_options"))
        relay = RelayPolicy(
            mydestination=frozenset(d.lower().rstrip(".") for d in cfg.get_list("mydestination")),
            relay_domains=tuple(d.lower() for d in cfg.get_list("relay_domains")),
            relay_restrictions=[r.lower() for r in cfg.get_list("smtpd_relay_restrictions")],
            sender_restrictions=[r.lower() for r in cfg.get_list("smtpd_sender_restrictions")],
            sender_login=SenderLogin.from_config(cfg),
            recipient_restrictions=[r.lower() for r in cfg.get_list("smtpd_recipient_restrictions")],
            local_recipient_maps=cfg.get_list("local_recipient_maps"),
            recipient_delimiter=cfg.get("recipient_delimiter"),
            allow_untrusted_routing=cfg.get_bool("allow_untrusted_routing"),
            reject_unlisted=cfg.get_bool("smtpd_reject_unlisted_recipient")
            and "no_unknown_recipient_checks" not in override_words,
            own_addresses=own_addresses(cfg),
            tables=RecipientTables.from_config(cfg),
            mapped=MappedRecipients.from_config(cfg),
        )
        warnings.extend(relay.check_config())
        restriction_cfg, problems = RestrictionConfig.from_config(cfg)
        warnings.extend(problems)
        warnings.extend(f"unknown smtpd restriction: \"{name}\" (answers 451 4.3.5)"
                        for name in unknown_names(restriction_cfg))
        bare = cfg.get("smtpd_forbid_bare_newline").strip().lower()
        bare = {"yes": "reject"}.get(bare, bare)   # Postfix 3.8's boolean form
        if bare not in BARE_NEWLINE_POLICIES:
            raise SettingsError(f"smtpd_forbid_bare_newline = {bare}: use normalize, reject or no")
        level = cfg.get("smtpd_tls_security_level").strip().lower()
        cert = cfg.get("smtpd_tls_cert_file").strip()
        if level not in ("", "none", "may", "encrypt"):
            raise SettingsError(f"smtpd_tls_security_level = {level}: use none, may or encrypt")
        if not level:
            level = "may" if cert else "none"
        watcher = None
        if cert and level != "none":
            watcher = tls.CertificateWatcher(cert, cfg.get("smtpd_tls_key_file").strip(),
                                             cfg.get("smtpd_tls_protocols"), maillog.warning)
        elif level == "encrypt":
            warnings.append("smtpd_tls_security_level = encrypt but no smtpd_tls_cert_file: "
                            "mail will be refused")
        if watcher is None and cfg.get_bool("smtpd_tls_wrappermode"):
            warnings.append("smtpd_tls_wrappermode = yes but no smtpd_tls_cert_file: "
                            "connections will be closed at once")
        sasl = None
        if cfg.get_bool("smtpd_sasl_auth_enable"):
            sasl = SaslServer.from_config(cfg)
            if watcher is None and sasl.tls_auth_only:
                warnings.append("smtpd_sasl_auth_enable = yes with smtpd_tls_auth_only = yes "
                                "but no TLS certificate: AUTH will never be offered")
        rewrite = [w.lower() for w in cfg.get_list("local_header_rewrite_clients")]
        exceptions = networks("smtpd_client_event_limit_exceptions")
        pregreet_action = cfg.get("smtpd_pregreet_action").strip().lower()
        if pregreet_action not in pregreet.ACTIONS:
            raise SettingsError(f"smtpd_pregreet_action = {pregreet_action}: use ignore, log or enforce")
        stressed = cfg.with_overrides({"stress": "yes"})
        return cls(
            hostname=cfg.get("myhostname"),
            banner=cfg.get("smtpd_banner"),
            relay=relay,
            mynetworks=networks("mynetworks"),
            message_size_limit=cfg.get_size("message_size_limit"),
            line_length_limit=cfg.get_size("line_length_limit"),
            command_line_limit=cfg.get_size("smtpd_command_line_limit"),
            recipient_limit=cfg.get_int("smtpd_recipient_limit"),
            timeout=cfg.get_time("smtpd_timeout"),
            starttls_timeout=cfg.get_time("smtpd_starttls_timeout"),
            hard_error_limit=cfg.get_int("smtpd_hard_error_limit"),
            soft_error_limit=cfg.get_int("smtpd_soft_error_limit"),
            error_sleep=cfg.get_time("smtpd_error_sleep_time"),
            connection_limit=cfg.get_int("smtpd_client_connection_count_limit"),
            connection_limit_exceptions=exceptions,
            limits=ClientLimits.from_config(cfg, exceptions),
            pregreet_delay=cfg.get_time("smtpd_pregreet_delay"),
            pregreet_action=pregreet_action,
            stress_timeout=stressed.get_time("smtpd_timeout"),
            stress_hard_error_limit=stressed.get_int("smtpd_hard_error_limit"),
            load=stress.Load(threshold=cfg.get_int("smtpd_busy_session_count")),
            bare_newline=bare,
            bare_newline_exclusions=networks("smtpd_forbid_bare_newline_exclusions"),
            forbidden_commands=frozenset(c.upper() for c in cfg.get_list("smtpd_forbidden_commands")),
            disable_vrfy=cfg.get_bool("disable_vrfy_command"),
            smtputf8_enable=cfg.get_bool("smtputf8_enable"),
            tls_context=watcher.context if watcher is not None else None,
            tls_watcher=watcher,
            sasl=sasl,
            milters=MilterSetup.from_config(cfg),
            restrictions=Restrictions(restriction_cfg, relay),
            tls_level=level,
            tls_wrappermode=cfg.get_bool("smtpd_tls_wrappermode"),
            rewrite_all="static:all" in rewrite or cfg.get_bool("always_add_missing_headers"),
            rewrite_mynetworks="permit_mynetworks" in rewrite,
            queue_minfree=cfg.get_size("queue_minfree"),
            content_filter=cfg.get("content_filter").strip(),
            overrides=override_words,
            ipc_timeout=cfg.get_time("ipc_timeout"),
            ipc_max_frame=cfg.get_size("ipc_max_frame"),
            warnings=warnings,
        )
