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
from postpy.smtp.tls import TlsPolicy, make_policy


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
    client = ClientSettings(
        helo_name=cfg.get(p("smtp_helo_name")) or myhostname, myhostname=myhostname,
        tls=make_policy(cfg.get(p("smtp_tls_security_level")) or ("none" if lmtp else ""),
                        cfg.get(p("smtp_tls_CAfile"))),
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
        reuse_time_limit=cfg.get_time(p("smtp_connection_reuse_time_limit")))
