"""The settings of smtpd's restrictions, read once per process from main.cf.

:meth:`RestrictionConfig.from_config` reads the seven restriction lists,
``smtpd_restriction_classes`` (each class is a parameter of its own, set
in main.cf), ``smtpd_delay_reject``, ``smtpd_helo_required``, the reply
codes, the access table key rules, the DNSBL reply templates, the policy
client's limits and the DNS resolver (built here, before any chroot, while
resolv.conf is readable).  Unknown restriction names are warned about
here; at run time they answer ``451 4.3.5 Server configuration error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dns.asyncresolver

from postpy.config.maincf import Config
from postpy.smtpd.access import Codes
from postpy.smtpd.peername import read_hosts
from postpy.smtpd.policy import PolicyClients, PolicySettings
from postpy.util.dnsresolver import make_resolver

LISTS = {
    "client": "smtpd_client_restrictions",
    "helo": "smtpd_helo_restrictions",
    "sender": "smtpd_sender_restrictions",
    "relay": "smtpd_relay_restrictions",
    "recipient": "smtpd_recipient_restrictions",
    "data": "smtpd_data_restrictions",
    "eod": "smtpd_end_of_data_restrictions",
}
TEMPFAIL_ACTIONS = ("defer_if_permit", "defer")


def _template_expander(cfg: Config | None) -> Callable[[str, Mapping[str, str]], str]:
    base = cfg if cfg is not None else Config("")

    def expand(text: str, values: Mapping[str, str]) -> str:
        return base.expand(text, values)
    return expand


@dataclass
class RestrictionConfig:
    lists: dict[str, list[str]] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)
    delay_reject: bool = True
    helo_required: bool = False
    reject_code: int = 554
    defer_code: int = 450
    access: Codes = field(default_factory=Codes)
    non_fqdn_code: int = 504
    invalid_hostname_code: int = 501
    unknown_address_code: int = 450
    unknown_client_code: int = 450
    address_tempfail: str = "defer_if_permit"
    rbl_code: int = 554
    default_rbl_reply: str = ("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
                              "$rbl_domain${rbl_reason?; $rbl_reason}")
    rbl_reply_maps: list[str] = field(default_factory=list)
    parent_matches: bool = True             # smtpd_access_maps in parent_domain_matches_subdomains
    null_key: str = "<>"
    recipient_delimiter: str = ""
    policy: PolicyClients = field(default_factory=PolicyClients)
    resolver: dns.asyncresolver.Resolver | None = None
    dns_timeout: float = 10.0
    peername_lookup: bool = True
    mail_version: str = ""
    hosts: dict[str, list[str]] = field(default_factory=dict)
    expand: Callable[[str, Mapping[str, str]], str] = field(default_factory=lambda: _template_expander(None))

    def list_for(self, kind: str) -> list[str]:
        return self.lists.get(kind, [])

    @classmethod
    def from_config(cls, cfg: Config) -> tuple[RestrictionConfig, list[str]]:
        """The settings and warnings (unknown restrictions, undefined classes)."""
        warnings: list[str] = []
        classes: dict[str, list[str]] = {}
        for name in cfg.get_list("smtpd_restriction_classes"):
            value = cfg.raw(name)
            if value is None:
                warnings.append(f"smtpd_restriction_classes: class {name} is not defined in main.cf")
                continue
            classes[name.lower()] = cfg.get_list(name)
        tempfail = cfg.get("unknown_address_tempfail_action").strip().lower()
        if tempfail not in TEMPFAIL_ACTIONS:
            warnings.append(f"unknown_address_tempfail_action = {tempfail}: using defer_if_permit")
            tempfail = "defer_if_permit"
        policy = PolicySettings(
            timeout=cfg.get_time("smtpd_policy_service_timeout"),
            max_idle=cfg.get_time("smtpd_policy_service_max_idle"),
            max_ttl=cfg.get_time("smtpd_policy_service_max_ttl"),
            try_limit=cfg.get_int("smtpd_policy_service_try_limit"),
            retry_delay=cfg.get_time("smtpd_policy_service_retry_delay"),
            default_action=cfg.get("smtpd_policy_service_default_action").strip(),
            policy_context=cfg.get("smtpd_policy_service_policy_context").strip())
        timeout = cfg.get_time("smtpd_dns_timeout")
        config = cls(
            lists={kind: cfg.get_list(param) for kind, param in LISTS.items()},
            classes=classes,
            delay_reject=cfg.get_bool("smtpd_delay_reject"),
            helo_required=cfg.get_bool("smtpd_helo_required"),
            reject_code=cfg.get_int("reject_code"),
            defer_code=cfg.get_int("defer_code"),
            access=Codes(cfg.get_int("access_map_reject_code"), cfg.get_int("access_map_defer_code")),
            non_fqdn_code=cfg.get_int("non_fqdn_reject_code"),
            invalid_hostname_code=cfg.get_int("invalid_hostname_reject_code"),
            unknown_address_code=cfg.get_int("unknown_address_reject_code"),
            unknown_client_code=cfg.get_int("unknown_client_reject_code"),
            address_tempfail=tempfail,
            rbl_code=cfg.get_int("maps_rbl_reject_code"),
            default_rbl_reply=cfg.raw("default_rbl_reply") or "",
            rbl_reply_maps=cfg.get_list("rbl_reply_maps"),
            parent_matches="smtpd_access_maps" in cfg.get_list("parent_domain_matches_subdomains"),
            null_key=cfg.get("smtpd_null_access_lookup_key").strip() or "<>",
            recipient_delimiter=cfg.get("recipient_delimiter"),
            policy=PolicyClients(policy),
            resolver=make_resolver(cfg.get("dns_resolver_address").strip(), timeout),
            dns_timeout=timeout,
            peername_lookup=cfg.get_bool("smtpd_peername_lookup"),
            mail_version=cfg.get("mail_version"),
            hosts=read_hosts(),
            expand=_template_expander(cfg),
        )
        return config, warnings

