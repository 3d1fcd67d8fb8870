"""The smtp client's settings, read once from main.cf (plus master.cf ``-o``).

:func:`load_settings` is the only place that knows which parameter feeds
which knob; the client and the delivery loop take the dataclasses below.
In LMTP mode (the ``lmtp`` program) every ``smtp_*`` parameter is read as
its ``lmtp_*`` twin, ``helo`` spelled ``lhlo`` (:func:`param_name`), as
Postfix names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postpy.config.maincf import Config
from postpy.smtp.dns import parse_port
from postpy.smtp.sasl_client import SaslSettings, parse_options
from postpy.smtp.tls import ContextFactory, TlsPolicy, cipher_string
from postpy.smtp.tls_policy import PolicyDefaults, PolicyTable


@dataclass
class Timeouts:
    connect: float = 30
    helo: float = 300
    starttls: float = 300
    mail: float = 300
    rcpt: float = 300
    data_init: float = 120
    data_xfer: float = 180
    data_done: float = 600
    rset: float = 20
    quit: float = 300


@dataclass
class ClientSettings:
    helo_name: str
    myhostname: str
    tls: TlsPolicy
    timeouts: Timeouts = field(default_factory=Timeouts)
    bind_address: str = ""
    skip_5xx_greeting: bool = True
    line_length_limit: int = 998
    mime_output_conversion: bool = True    # 8-bit to 7 bit for servers without 8BITMIME
    lmtp: bool = False                     # RFC 2033: LHLO, one reply per recipient after the dot
    sasl: SaslSettings | None = None       # SMTP AUTH as a client (smtp_sasl_*)


@dataclass
class AgentSettings:
    client: ClientSettings
    default_port: int = 25
    destination_limit: int = 20        # sessions to one next hop at once, in this process
    address_limit: int = 5             # server addresses tried per delivery (0: all)
    session_limit: int = 2             # greeted sessions tried per delivery (0: all)
    cache_on_demand: bool = True
    cache_time_limit: float = 2.0
    reuse_time_limit: float = 300.0
    tls_policies: PolicyTable | None = None   # smtp_tls_policy_maps (None: client.tls for all)


def param_name(name: str, protocol: str = "smtp") -> str:
    """``smtp_helo_timeout`` as the ``protocol`` client calls it (``lmtp_lhlo_timeout``)."""
    if protocol == "smtp":
        return name
    return protocol + name.removeprefix("smtp").replace("_helo_", "_lhlo_")


def load_settings(cfg: Config, protocol: str = "smtp") -> AgentSettings:
    """Raises ConfigError / TlsConfigError / DeliveryFailure (bad port) with the reason."""
    def p(name: str) -> str:
        return param_name(name, protocol)

    t = Timeouts(
        connect=cfg.get_time(p("smtp_connect_timeout")), helo=cfg.get_time(p("smtp_helo_timeout")),
        starttls=cfg.get_time(p("smtp_starttls_timeout")), mail=cfg.get_time(p("smtp_mail_timeout")),
        rcpt=cfg.get_time(p("smtp_rcpt_timeout")),
        data_init=cfg.get_time(p("smtp_data_init_timeout")),
        data_xfer=cfg.get_time(p("smtp_data_xfer_timeout")),
        data_done=cfg.get_time(p("smtp_data_done_timeout")),
        rset=cfg.get_time(p("smtp_rset_timeout")), quit=cfg.get_time(p("smtp_quit_timeout")))
    myhostname = cfg.get("myhostname")
    lmtp = protocol == "lmtp"
    policies = load_tls_policies(cfg, protocol)
    client = ClientSettings(
        helo_name=cfg.get(p("smtp_helo_name")) or myhostname, myhostname=myhostname,
        tls=policies.default, sasl=load_sasl(cfg, protocol),
        timeouts=t, bind_address=cfg.get(p("smtp_bind_address")),
        skip_5xx_greeting=cfg.get_bool(p("smtp_skip_5xx_greeting")),
        line_length_limit=cfg.get_int(p("smtp_line_length_limit")),
        mime_output_conversion=not cfg.get_bool("disable_mime_output_conversion"), lmtp=lmtp)
    return AgentSettings(
        client=client, default_port=parse_port(cfg.get(p("smtp_tcp_port")).strip(), 24 if lmtp else 25),
        destination_limit=cfg.get_int(p("smtp_destination_concurrency_limit")),
        address_limit=cfg.get_int(p("smtp_mx_address_limit")),
        session_limit=cfg.get_int(p("smtp_mx_session_limit")),
        cache_on_demand=cfg.get_bool(p("smtp_connection_cache_on_demand")),
        cache_time_limit=cfg.get_time(p("smtp_connection_cache_time_limit")),
        reuse_time_limit=cfg.get_time(p("smtp_connection_reuse_time_limit")),
        tls_policies=policies)


def load_tls_policies(cfg: Config, protocol: str = "smtp") -> PolicyTable:
    """The global TLS policy and the policy table; contexts made now, before the chroot.
    Raises TlsConfigError / ConfigError."""
    def p(name: str) -> str:
        return param_name(name, protocol)

    cert = cfg.get(p("smtp_tls_cert_file")).strip()
    factory = ContextFactory(cfg.get(p("smtp_tls_CAfile")).strip(), cert,
                             cfg.get(p("smtp_tls_key_file")).strip() if cert else "").load()
    level = cfg.get(p("smtp_tls_security_level")).strip().lower() or \
        ("none" if protocol == "lmtp" else "may")
    defaults = PolicyDefaults(
        level=level, protocols=cfg.get(p("smtp_tls_protocols")),
        mandatory_protocols=cfg.get(p("smtp_tls_mandatory_protocols")),
        ciphers=cfg.get(p("smtp_tls_ciphers")), mandatory_ciphers=cfg.get(p("smtp_tls_mandatory_ciphers")),
        exclude=cfg.get(p("smtp_tls_exclude_ciphers")),
        verify_match=tuple(cfg.get_list(p("smtp_tls_verify_cert_match"))),
        secure_match=tuple(cfg.get_list(p("smtp_tls_secure_cert_match"))),
        fingerprint_match=tuple(w for text in cfg.get_list(p("smtp_tls_fingerprint_cert_match"))
                                for w in text.split("|") if w),
        digest=cfg.get(p("smtp_tls_fingerprint_digest")).strip().lower() or "sha256",
        loglevel=cfg.get_int(p("smtp_tls_loglevel")), param=p("smtp_tls_policy_maps"))
    table = PolicyTable(defaults, cfg.get_list(p("smtp_tls_policy_maps")), factory)
    # The usual contexts now, while the client certificate is readable.
    d = defaults
    for chain, protocols, grade in ((False, d.protocols, d.ciphers),
                                    (False, d.mandatory_protocols, d.mandatory_ciphers),
                                    (True, d.mandatory_protocols, d.mandatory_ciphers)):
        factory.context(chain, protocols, cipher_string(grade, d.exclude))
    return table


def load_sasl(cfg: Config, protocol: str = "smtp") -> SaslSettings:
    """Raises SaslConfigError / ConfigError."""
    def p(name: str) -> str:
        return param_name(name, protocol)

    options = parse_options(cfg.get_list(p("smtp_sasl_security_options")),
                            p("smtp_sasl_security_options"))
    return SaslSettings(
        enable=cfg.get_bool(p("smtp_sasl_auth_enable")),
        password_maps=cfg.get_list(p("smtp_sasl_password_maps")),
        options=options,
        tls_options=parse_options(cfg.get_list(p("smtp_sasl_tls_security_options")),
                                  p("smtp_sasl_tls_security_options")),
        mechanism_filter=cfg.get_list(p("smtp_sasl_mechanism_filter")),
        sender_dependent=cfg.get_bool(p("smtp_sender_dependent_authentication")),
        param=p("smtp_sasl_password_maps"))
