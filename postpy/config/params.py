"""The one table of configuration parameters.

Every parameter postpy reads is declared here once, with its type, default
and a one-line description.  ``postconf -d`` prints this table, the main.cf
reader validates against it, and daemons read values through
:class:`postpy.config.maincf.Config`, which converts them with the type
declared here.  Defaults may refer to other parameters with ``$name``; they
are expanded when read, exactly like values from main.cf.

Types:
  str    free text (after ``$name`` expansion)
  int    a decimal integer, optionally bounded by ``min``/``max``
  bool   ``yes`` or ``no``
  time   a number with an optional unit s, m, h, d, w (default unit: s)
  list   comma- and/or whitespace-separated words
  size   bytes, a plain integer
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    description: str
    min: int | None = None
    max: int | None = None


_P = Param

PARAMS: tuple[Param, ...] = (
    # --- identity and paths ------------------------------------------------
    _P("config_directory", "str", "/etc/postpy", "Directory with main.cf and master.cf (set at load time)."),
    _P("queue_directory", "str", "/var/spool/postpy", "Root of the mail queue."),
    _P("daemon_directory", "str", "", "Directory with the programs master starts (empty: the installed libexec)."),
    _P("data_directory", "str", "$queue_directory/data", "Directory for writable non-queue data."),
    _P("mail_owner", "str", "postpy", "Unprivileged user that owns the queue and runs the daemons."),
    _P("setgid_group", "str", "postdrop", "Group of the local submission directory."),
    _P("default_privs", "str", "nobody", "User for deliveries to commands and files from aliases."),
    _P("mail_name", "str", "postpy", "The mail system name in greetings and bounces."),
    _P("mail_version", "str", "0.1.0", "The postpy version."),
    _P("myhostname", "str", "", "Fully qualified host name of this system (empty: from the system)."),
    _P("mydomain", "str", "", "Domain of this system (empty: myhostname less its first label)."),
    _P("myorigin", "str", "$myhostname", "Domain appended to unqualified addresses of local mail."),
    _P("append_at_myorigin", "bool", "yes", "Append @$myorigin to unqualified addresses (envelope, and headers of local mail)."),
    _P("mydestination", "list", "$myhostname, localhost.$mydomain, localhost", "Domains delivered on this host."),
    _P("mynetworks", "list", "127.0.0.0/8 [::1]/128", "Trusted client networks (CIDR)."),
    _P("relay_domains", "list", "", "Domains this system relays mail to."),
    _P("relayhost", "str", "", "Next-hop for non-local mail (empty: direct delivery by MX)."),
    _P("inet_interfaces", "list", "all", "Network addresses the SMTP server listens on."),
    _P("proxy_interfaces", "list", "", "Addresses this host receives mail on through a proxy or NAT (local for user@[ip])."),
    _P("inet_protocols", "list", "all", "Address families used: ipv4, ipv6, all."),
    _P("syslog_name", "str", "postpy", "Prefix of the log tag (postpy/smtpd)."),
    _P("syslog_facility", "str", "mail", "Syslog facility."),
    _P("maillog_file", "str", "", "Log file instead of syslog (empty: syslog)."),
    _P("debug_peer_level", "int", "2", "Extra logging level for debug peers.", 1),
    # --- master and daemons ------------------------------------------------
    _P("process_limit", "int", "100", "Default maxproc for master.cf services.", 1),
    _P("max_idle", "time", "100s", "Seconds a daemon waits for work before it exits.", 1),
    _P("max_use", "int", "10000", "Connections a daemon serves before it exits (a Python start is costly).", 1),
    _P("service_throttle_time", "time", "60s", "Pause before restarting a service that died at once.", 0),
    _P("daemon_timeout", "time", "18000s", "How long a daemon may take to handle one request.", 1),
    _P("ipc_timeout", "time", "3600s", "Time limit for one exchange between daemons.", 1),
    _P("ipc_max_frame", "size", "1048576", "Largest ipc frame accepted, in bytes.", 1024),
    _P("import_environment", "list", "MAIL_CONFIG TZ LANG=C", "Environment passed to daemons."),
    _P("queue_minfree", "size", "0", "Free bytes the queue file system must keep (0: only the message).", 0),
    # --- queue manager -----------------------------------------------------
    _P("qmgr_message_active_limit", "int", "20000", "Messages in the active queue at most.", 1),
    _P("qmgr_message_recipient_limit", "int", "20000", "Recipients in memory at most.", 1),
    _P("default_destination_concurrency_limit", "int", "20", "Parallel deliveries to one destination.", 1),
    _P("local_destination_concurrency_limit", "int", "2", "Parallel deliveries to one local recipient.", 1),
    _P("smtp_destination_concurrency_limit", "int", "$default_destination_concurrency_limit", "Parallel SMTP deliveries to one domain.", 1),
    _P("default_process_limit", "int", "$process_limit", "Delivery agent processes at most.", 1),
    _P("minimal_backoff_time", "time", "300s", "Least time a deferred message waits before retry.", 1),
    _P("maximal_backoff_time", "time", "4000s", "Most time a deferred message waits before retry.", 1),
    _P("queue_run_delay", "time", "300s", "Interval between scans of the deferred queue.", 1),
    _P("maximal_queue_lifetime", "time", "5d", "Age at which an undeliverable message is returned.", 0),
    _P("bounce_queue_lifetime", "time", "5d", "Age at which an undeliverable bounce is dropped.", 0),
    _P("delay_warning_time", "time", "0h", "Age at which the sender is told of a delay (0: never).", 0),
    _P("default_destination_recipient_limit", "int", "50", "Recipients in one delivery request at most.", 1),
    _P("receive_override_options", "list", "", "What a receiving service turns off: no_address_mappings, no_header_body_checks, no_unknown_recipient_checks, no_milters."),
    _P("content_filter", "str", "", "transport:nexthop that gets all mail after the queue, instead of its recipients' routes."),
    _P("transport_maps", "list", "", "Tables mapping recipients to transport:nexthop."),
    _P("default_transport", "str", "smtp", "Transport for non-local mail."),
    _P("local_transport", "str", "local:$myhostname", "Transport for mydestination mail."),
    _P("virtual_mailbox_domains", "list", "$virtual_mailbox_maps", "Domains whose mailboxes are all virtual: routed to virtual_transport (names, .subdomains or tables)."),
    _P("virtual_mailbox_maps", "list", "", "Tables of the valid recipients of virtual_mailbox_domains (checked at RCPT)."),
    _P("virtual_transport", "str", "virtual", "transport[:nexthop] for virtual_mailbox_domains (empty next hop: the domain)."),
    _P("relocated_maps", "list", "", "Tables of moved users: their mail bounces (and RCPT is refused) with \"User has moved to NEWADDR\"."),
    # --- receiving ---------------------------------------------------------
    _P("smtpd_banner", "str", "$myhostname ESMTP $mail_name", "Text of the SMTP greeting after 220."),
    _P("message_size_limit", "size", "10240000", "Largest message accepted, in bytes (0: no limit).", 0),
    _P("header_size_limit", "size", "102400", "Largest header (with continuations) in bytes.", 1),
    _P("header_count_limit", "int", "1000", "Most headers in one message.", 1),
    _P("line_length_limit", "size", "2048", "Longest text line stored as one piece.", 1),
    _P("hopcount_limit", "int", "50", "Most Received: headers before mail is bounced as a loop.", 1),
    _P("smtpd_recipient_limit", "int", "1000", "Recipients accepted in one transaction.", 1),
    _P("smtpd_timeout", "time", "300s", "Time limit to read a client command or data.", 1),
    _P("smtpd_hard_error_limit", "int", "20", "Errors after which a client is disconnected.", 1),
    _P("smtpd_soft_error_limit", "int", "10", "Errors after which replies to a client are delayed.", 1),
    _P("smtpd_error_sleep_time", "time", "1s", "Delay per reply beyond the soft error limit.", 0),
    _P("smtpd_client_connection_count_limit", "int", "50", "Simultaneous connections from one client (0: no limit).", 0),
    _P("smtpd_command_line_limit", "size", "2048", "Longest SMTP command line accepted.", 512),
    _P("smtpd_relay_restrictions", "list", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", "Relay control at RCPT."),
    _P("smtpd_recipient_restrictions", "list", "", "Further restrictions at RCPT."),
    _P("smtpd_sender_restrictions", "list", "", "Restrictions on the MAIL FROM sender, evaluated at RCPT (before the relay restrictions)."),
    _P("smtpd_forbid_bare_newline", "str", "normalize", "Bare LF/CR in SMTP: normalize, reject or no."),
    _P("smtpd_forbid_bare_newline_exclusions", "list", "$mynetworks", "Clients exempt from bare newline rejection."),
    _P("disable_vrfy_command", "bool", "yes", "Refuse the VRFY command."),
    _P("smtpd_tls_cert_file", "str", "", "Server certificate file (PEM)."),
    _P("smtpd_tls_key_file", "str", "$smtpd_tls_cert_file", "Server private key file (PEM)."),
    _P("smtpd_tls_security_level", "str", "", "Server TLS: none, may or encrypt."),
    _P("smtpd_tls_protocols", "str", ">=TLSv1.2", "Least TLS protocol the server accepts."),
    _P("smtpd_starttls_timeout", "time", "300s", "Time limit for the TLS handshake after STARTTLS.", 1),
    _P("smtpd_client_event_limit_exceptions", "list", "$mynetworks", "Clients exempt from the connection count limit."),
    _P("smtpd_forbidden_commands", "list", "CONNECT GET POST", "Commands that end the session at once (proxy abuse)."),
    _P("smtpd_reject_unlisted_recipient", "bool", "yes", "Reject unknown recipients in local domains at RCPT."),
    _P("local_recipient_maps", "list", "unix:passwd.byname $alias_maps", "Tables of valid local recipients."),
    _P("relay_recipient_maps", "list", "", "Tables of the valid recipients of relay_domains (empty: everyone), checked at RCPT."),
    _P("smtputf8_enable", "bool", "yes", "Accept SMTPUTF8 mail."),
    _P("allow_untrusted_routing", "bool", "no", "Accept sender-specified routing from outside mynetworks."),
    _P("local_header_rewrite_clients", "list", "permit_mynetworks", "Clients whose mail gets missing headers added and header addresses qualified."),
    _P("always_add_missing_headers", "bool", "no", "Add Message-ID/Date/From to mail from anyone."),
    # --- smtpd restrictions, access tables, DNS lists, policy servers (issue 13) ---
    _P("smtpd_client_restrictions", "list", "", "Restrictions on the client address and name (at RCPT with smtpd_delay_reject)."),
    _P("smtpd_helo_restrictions", "list", "", "Restrictions on the HELO/EHLO name (at RCPT with smtpd_delay_reject)."),
    _P("smtpd_data_restrictions", "list", "", "Restrictions at the DATA command."),
    _P("smtpd_end_of_data_restrictions", "list", "", "Restrictions after the end of the message content."),
    _P("smtpd_delay_reject", "bool", "yes", "Evaluate client, HELO and sender restrictions at RCPT TO."),
    _P("smtpd_helo_required", "bool", "no", "Refuse MAIL before HELO/EHLO."),
    _P("smtpd_restriction_classes", "list", "", "Names of restriction lists defined as main.cf parameters."),
    _P("reject_code", "int", "554", "Reply code of the reject restriction.", 400, 599),
    _P("defer_code", "int", "450", "Reply code of the defer restriction.", 400, 499),
    _P("access_map_reject_code", "int", "554", "Reply code of REJECT in access tables.", 400, 599),
    _P("access_map_defer_code", "int", "450", "Reply code of DEFER and DEFER_IF_* in access tables.", 400, 499),
    _P("non_fqdn_reject_code", "int", "504", "Reply code of the reject_non_fqdn_* restrictions.", 400, 599),
    _P("invalid_hostname_reject_code", "int", "501", "Reply code of reject_invalid_helo_hostname.", 400, 599),
    _P("unknown_address_reject_code", "int", "450", "Reply code of reject_unknown_sender_domain / _recipient_domain.", 400, 599),
    _P("unknown_client_reject_code", "int", "450", "Reply code of reject_unknown_client_hostname / _reverse_client_hostname.", 400, 599),
    _P("reject_tempfail_action", "str", "defer_if_permit", "Action when a restriction's lookup fails temporarily: defer_if_permit or defer."),
    _P("unknown_address_tempfail_action", "str", "$reject_tempfail_action", "Action when reject_unknown_*_domain cannot get an answer from DNS."),
    _P("maps_rbl_reject_code", "int", "554", "Reply code ($rbl_code) of DNS blocklist rejections.", 400, 599),
    _P("default_rbl_reply", "str", "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", "Reply template of DNS blocklist rejections."),
    _P("rbl_reply_maps", "list", "", "Tables of reply templates by DNS list domain."),
    _P("parent_domain_matches_subdomains", "list", "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "Features where a domain also matches its subdomains (smtpd_access_maps: access tables)."),
    _P("smtpd_null_access_lookup_key", "str", "<>", "Access table key for the null sender."),
    _P("smtpd_peername_lookup", "bool", "yes", "Look up the client's host name (PTR, forward-confirmed)."),
    _P("smtpd_dns_timeout", "time", "10s", "Time limit for one DNS lookup by smtpd (client names, domains, DNS lists).", 1),
    _P("smtpd_policy_service_timeout", "time", "100s", "Time limit to connect to and talk with a policy server.", 1),
    _P("smtpd_policy_service_max_idle", "time", "300s", "Close a policy server connection unused for this long.", 1),
    _P("smtpd_policy_service_max_ttl", "time", "1000s", "Close a policy server connection this old.", 1),
    _P("smtpd_policy_service_try_limit", "int", "2", "Attempts to reach a policy server.", 1),
    _P("smtpd_policy_service_retry_delay", "time", "1s", "Pause between attempts to reach a policy server.", 0),
    _P("smtpd_policy_service_default_action", "str", "451 4.3.5 Server configuration problem", "Action when a policy server gives no usable answer."),
    _P("smtpd_policy_service_policy_context", "str", "", "Sent to policy servers as policy_context."),
    # --- address rewriting in cleanup (canonical(5), virtual(5)) ------------
    _P("canonical_maps", "list", "", "Tables mapping sender and recipient addresses, envelope and headers (canonical(5))."),
    _P("sender_canonical_maps", "list", "", "Tables mapping sender addresses only (canonical(5))."),
    _P("recipient_canonical_maps", "list", "", "Tables mapping recipient addresses only (canonical(5))."),
    _P("canonical_classes", "list", "envelope_sender, envelope_recipient, header_sender, header_recipient", "Addresses canonical_maps applies to."),
    _P("sender_canonical_classes", "list", "envelope_sender, header_sender", "Addresses sender_canonical_maps applies to."),
    _P("recipient_canonical_classes", "list", "envelope_recipient, header_recipient", "Addresses recipient_canonical_maps applies to."),
    _P("propagate_unmatched_extensions", "list", "canonical, virtual", "Mappings that carry an address extension (user+ext) over to their result when the key matched without it."),
    _P("masquerade_domains", "list", "", "Domains whose subdomains are hidden in addresses (host.example.com -> example.com); !domain keeps one."),
    _P("masquerade_exceptions", "list", "", "User names never masqueraded (e.g. root)."),
    _P("masquerade_classes", "list", "envelope_sender, header_sender, header_recipient", "Addresses masquerading applies to."),
    _P("virtual_maps", "list", "", "Obsolete name of virtual_alias_maps (Postfix 1.1)."),
    _P("virtual_alias_maps", "list", "$virtual_maps", "Tables redirecting envelope recipients to one or more addresses, recursively (virtual(5))."),
    _P("virtual_alias_domains", "list", "$virtual_alias_maps", "Domains whose every address is an alias: unknown users are refused (names, .subdomains, tables with the domain as a key)."),
    _P("virtual_alias_recursion_limit", "int", "1000", "Nesting depth of virtual alias expansion at most.", 1),
    _P("virtual_alias_expansion_limit", "int", "1000", "Addresses one recipient may expand to at most.", 1),
    # --- content inspection in cleanup (header_checks(5)) -------------------
    _P("header_checks", "list", "", "Tables of patterns for the primary message headers (not the MIME ones): REJECT, DISCARD, HOLD, WARN, IGNORE, PREPEND, REPLACE, REDIRECT, FILTER, ..."),
    _P("mime_header_checks", "list", "$header_checks", "Tables of patterns for MIME headers (Content-*, MIME-Version) anywhere in the message, and for the headers of MIME parts."),
    _P("nested_header_checks", "list", "$header_checks", "Tables of patterns for the headers of attached messages (message/rfc822), MIME headers excepted."),
    _P("body_checks", "list", "", "Tables of patterns for body lines, one physical line (at most $line_length_limit bytes) at a time."),
    _P("body_checks_size_limit", "size", "51200", "Bytes of each body part inspected by body_checks at most.", 0),
    # --- local delivery ----------------------------------------------------
    _P("alias_maps", "list", "lmdb:/etc/aliases", "Alias tables used by local delivery."),
    _P("alias_database", "list", "lmdb:/etc/aliases", "Alias tables rebuilt by newaliases."),
    _P("forward_path", "list", "$home/.forward${recipient_delimiter}${extension}, $home/.forward", "Where .forward files are looked for."),
    _P("home_mailbox", "str", "", "Mailbox under the home directory; a trailing / means Maildir."),
    _P("mail_spool_directory", "str", "/var/mail", "Directory of mailboxes; a trailing / means Maildir."),
    _P("mailbox_command", "str", "", "External command that delivers to the mailbox."),
    _P("mailbox_transport", "str", "", "transport[:nexthop] that local hands every mailbox delivery to, after aliases and .forward."),
    _P("fallback_transport", "str", "", "transport[:nexthop] that local hands recipients without a passwd entry to (instead of 5.1.1)."),
    _P("mailbox_size_limit", "size", "51200000", "Largest mailbox or maildir message file (0: no limit).", 0),
    _P("message_size_limit_local", "size", "0", "Unused; kept for postconf compatibility.", 0),
    _P("recipient_delimiter", "str", "", "Separator of user and extension (user+ext)."),
    _P("command_time_limit", "time", "1000s", "Time limit for delivery to a command.", 1),
    _P("allow_mail_to_commands", "list", "alias, forward", "Where |command destinations are allowed."),
    _P("allow_mail_to_files", "list", "alias, forward", "Where /file destinations are allowed."),
    _P("prepend_delivered_header", "list", "command, file, forward", "Deliveries that get Delivered-To:."),
    _P("owner_request_special", "bool", "yes", "Treat owner-X and X-request aliases specially."),
    _P("duplicate_filter_limit", "int", "1000", "Addresses remembered for duplicate elimination.", 0),
    _P("deliver_lock_attempts", "int", "20", "Attempts to lock a mailbox or file before deferring.", 1),
    _P("deliver_lock_delay", "time", "1s", "Pause between mailbox lock attempts.", 0),
    _P("stale_lock_time", "time", "500s", "Age after which a mailbox dotlock file is removed as stale.", 1),
    _P("biff", "bool", "no", "Notify the comsat service of new mail."),
    # --- bounces -----------------------------------------------------------
    _P("bounce_notice_recipient", "str", "postmaster", "Recipient of bounce notices to the postmaster."),
    _P("2bounce_notice_recipient", "str", "postmaster", "Recipient of undeliverable bounces."),
    _P("notify_classes", "list", "resource, software", "Problems reported to the postmaster."),
    _P("bounce_size_limit", "size", "50000", "Most original content returned in a bounce.", 0),
    _P("empty_address_recipient", "str", "MAILER-DAEMON", "Name shown for the null sender."),
    # --- outbound SMTP -----------------------------------------------------
    _P("smtp_connect_timeout", "time", "30s", "Time limit to connect to an SMTP server.", 1),
    _P("smtp_helo_timeout", "time", "300s", "Time limit for the greeting and EHLO.", 1),
    _P("smtp_mail_timeout", "time", "300s", "Time limit for MAIL FROM.", 1),
    _P("smtp_rcpt_timeout", "time", "300s", "Time limit for RCPT TO.", 1),
    _P("smtp_data_init_timeout", "time", "120s", "Time limit for DATA.", 1),
    _P("smtp_data_xfer_timeout", "time", "180s", "Time limit for sending content.", 1),
    _P("smtp_data_done_timeout", "time", "600s", "Time limit for the reply to the final dot.", 1),
    _P("smtp_quit_timeout", "time", "300s", "Time limit for QUIT.", 1),
    _P("smtp_helo_name", "str", "$myhostname", "Name sent in EHLO/HELO."),
    _P("smtp_tls_security_level", "str", "may", "Client TLS: none, may, encrypt, fingerprint, verify, secure (dane, dane-only: as may, encrypt)."),
    _P("smtp_tls_CAfile", "str", "", "CA certificates for verifying servers."),
    _P("smtp_bind_address", "str", "", "Local address for outbound connections."),
    _P("dns_resolver_address", "str", "", "DNS server address[:port] (empty: the system resolver)."),
    _P("smtp_host_lookup", "list", "dns", "How hosts are looked up: dns, native."),
    _P("smtp_tcp_port", "str", "25", "Port of remote SMTP servers when the next hop names none (number or service name)."),
    _P("smtp_starttls_timeout", "time", "300s", "Time limit for the TLS handshake after STARTTLS.", 1),
    _P("smtp_rset_timeout", "time", "20s", "Time limit for RSET before a cached connection is reused.", 1),
    _P("smtp_mx_address_limit", "int", "5", "Server addresses tried for one delivery at most (0: no limit).", 0),
    _P("smtp_mx_session_limit", "int", "2", "SMTP sessions (greeted connections) tried for one delivery at most (0: no limit).", 0),
    _P("smtp_skip_5xx_greeting", "bool", "yes", "Treat a 5xx greeting like a 4xx one: try the next server, then defer."),
    _P("smtp_connection_cache_on_demand", "bool", "yes", "Keep connections open for more mail to the same next hop."),
    _P("smtp_connection_cache_time_limit", "time", "2s", "How long an unused cached connection stays open.", 1),
    _P("smtp_connection_reuse_time_limit", "time", "300s", "Age after which a connection is no longer reused.", 1),
    _P("smtp_dns_timeout", "time", "10s", "Time limit for one DNS lookup by the SMTP client.", 1),
    _P("smtp_line_length_limit", "int", "998", "Longest line sent; longer ones are broken with CRLF SPACE (0: no limit).", 0),
    # --- lmtp client (the smtp agent in LMTP mode; same meanings as smtp_*) ---
    _P("lmtp_tcp_port", "str", "24", "Port of LMTP servers when the next hop names none (number or service name)."),
    _P("lmtp_connect_timeout", "time", "30s", "Time limit to connect to an LMTP server.", 1),
    _P("lmtp_lhlo_timeout", "time", "300s", "Time limit for the greeting and LHLO.", 1),
    _P("lmtp_lhlo_name", "str", "$myhostname", "Name sent in LHLO."),
    _P("lmtp_mail_timeout", "time", "300s", "Time limit for MAIL FROM to an LMTP server.", 1),
    _P("lmtp_rcpt_timeout", "time", "300s", "Time limit for RCPT TO to an LMTP server.", 1),
    _P("lmtp_data_init_timeout", "time", "120s", "Time limit for DATA to an LMTP server.", 1),
    _P("lmtp_data_xfer_timeout", "time", "180s", "Time limit for sending content to an LMTP server.", 1),
    _P("lmtp_data_done_timeout", "time", "600s", "Time limit for each recipient's reply after the final dot.", 1),
    _P("lmtp_rset_timeout", "time", "20s", "Time limit for RSET to an LMTP server.", 1),
    _P("lmtp_quit_timeout", "time", "300s", "Time limit for QUIT to an LMTP server.", 1),
    _P("lmtp_starttls_timeout", "time", "300s", "Time limit for the TLS handshake after STARTTLS (LMTP).", 1),
    _P("lmtp_tls_security_level", "str", "none", "LMTP client TLS: none, may, encrypt, fingerprint, verify, secure."),
    _P("lmtp_tls_CAfile", "str", "", "CA certificates for verifying LMTP servers."),
    _P("lmtp_bind_address", "str", "", "Local address for LMTP connections over TCP."),
    _P("lmtp_host_lookup", "list", "dns, native", "How LMTP server hosts are looked up: dns, native (never MX)."),
    _P("lmtp_dns_timeout", "time", "10s", "Time limit for one DNS lookup by the LMTP client.", 1),
    _P("lmtp_mx_address_limit", "int", "5", "LMTP server addresses tried for one delivery at most (0: no limit).", 0),
    _P("lmtp_mx_session_limit", "int", "2", "LMTP sessions tried for one delivery at most (0: no limit).", 0),
    _P("lmtp_skip_5xx_greeting", "bool", "yes", "Treat a 5xx LMTP greeting like a 4xx one."),
    _P("lmtp_line_length_limit", "int", "998", "Longest line sent to an LMTP server (0: no limit).", 0),
    _P("lmtp_connection_cache_on_demand", "bool", "yes", "Keep LMTP connections open for more mail to the same server."),
    _P("lmtp_connection_cache_time_limit", "time", "2s", "How long an unused cached LMTP connection stays open.", 1),
    _P("lmtp_connection_reuse_time_limit", "time", "300s", "Age after which an LMTP connection is no longer reused.", 1),
    _P("disable_mime_output_conversion", "bool", "no", "Send 8-bit content as is to a server without 8BITMIME, instead of converting it to 7 bit."),
    # --- smtp/lmtp client: SMTP AUTH, TLS policy, sender-dependent routing (issue 14) ---
    _P("smtp_sasl_auth_enable", "bool", "no", "Log in (SMTP AUTH) to servers that have an entry in smtp_sasl_password_maps."),
    _P("smtp_sasl_password_maps", "list", "", "Tables of username:password by sender (see smtp_sender_dependent_authentication), [host]:port, [host], host:port, host or next-hop domain."),
    _P("smtp_sasl_security_options", "list", "noplaintext, noanonymous", "SASL mechanism restrictions without TLS: noplaintext, noactive, nodictionary, noanonymous, mutual_auth."),
    _P("smtp_sasl_tls_security_options", "list", "$smtp_sasl_security_options", "SASL mechanism restrictions under TLS (noanonymous alone allows PLAIN and LOGIN)."),
    _P("smtp_sasl_mechanism_filter", "list", "", "Mechanisms (names or tables) the client may use of those the server offers (empty: all)."),
    _P("smtp_sender_dependent_authentication", "bool", "no", "Look up smtp_sasl_password_maps by the envelope sender first (and keep connections apart per sender)."),
    _P("smtp_tls_policy_maps", "list", "", "Tables of TLS policy per next hop ([host]:port, [host], domain, .parent): level and match=, protocols=, ciphers=, exclude=."),
    _P("smtp_tls_protocols", "str", ">=TLSv1", "TLS protocols for opportunistic TLS (>=TLSv1.2, <=TLSv1.3, !TLSv1 forms)."),
    _P("smtp_tls_mandatory_protocols", "str", ">=TLSv1", "TLS protocols when TLS is required (encrypt and above)."),
    _P("smtp_tls_ciphers", "str", "medium", "Cipher grade for opportunistic TLS: high, medium, low, export, null."),
    _P("smtp_tls_mandatory_ciphers", "str", "medium", "Cipher grade when TLS is required."),
    _P("smtp_tls_exclude_ciphers", "list", "", "Ciphers never used by the SMTP client."),
    _P("smtp_tls_fingerprint_digest", "str", "sha256", "Digest of certificate and public-key fingerprints (fingerprint level)."),
    _P("smtp_tls_fingerprint_cert_match", "list", "", "Fingerprints accepted at the fingerprint level when the policy names none."),
    _P("smtp_tls_verify_cert_match", "list", "hostname", "Names a certificate must carry at the verify level: hostname, nexthop, dot-nexthop or names."),
    _P("smtp_tls_secure_cert_match", "list", "nexthop, dot-nexthop", "Names a certificate must carry at the secure level."),
    _P("smtp_tls_loglevel", "int", "0", "TLS logging: 0 and 1 the summary line, 2 also the peer certificate's names and fingerprints.", 0),
    _P("smtp_tls_cert_file", "str", "", "Client certificate (PEM) offered to servers that ask for one."),
    _P("smtp_tls_key_file", "str", "$smtp_tls_cert_file", "Private key of the client certificate (PEM)."),
    _P("lmtp_sasl_auth_enable", "bool", "no", "As smtp_sasl_auth_enable, for the LMTP client."),
    _P("lmtp_sasl_password_maps", "list", "", "As smtp_sasl_password_maps, for the LMTP client."),
    _P("lmtp_sasl_security_options", "list", "noplaintext, noanonymous", "As smtp_sasl_security_options, for the LMTP client."),
    _P("lmtp_sasl_tls_security_options", "list", "$lmtp_sasl_security_options", "As smtp_sasl_tls_security_options, for the LMTP client."),
    _P("lmtp_sasl_mechanism_filter", "list", "", "As smtp_sasl_mechanism_filter, for the LMTP client."),
    _P("lmtp_sender_dependent_authentication", "bool", "no", "As smtp_sender_dependent_authentication, for the LMTP client."),
    _P("lmtp_tls_policy_maps", "list", "", "As smtp_tls_policy_maps, for the LMTP client."),
    _P("lmtp_tls_protocols", "str", ">=TLSv1", "As smtp_tls_protocols, for the LMTP client."),
    _P("lmtp_tls_mandatory_protocols", "str", ">=TLSv1", "As smtp_tls_mandatory_protocols, for the LMTP client."),
    _P("lmtp_tls_ciphers", "str", "medium", "As smtp_tls_ciphers, for the LMTP client."),
    _P("lmtp_tls_mandatory_ciphers", "str", "medium", "As smtp_tls_mandatory_ciphers, for the LMTP client."),
    _P("lmtp_tls_exclude_ciphers", "list", "", "As smtp_tls_exclude_ciphers, for the LMTP client."),
    _P("lmtp_tls_fingerprint_digest", "str", "sha256", "As smtp_tls_fingerprint_digest, for the LMTP client."),
    _P("lmtp_tls_fingerprint_cert_match", "list", "", "As smtp_tls_fingerprint_cert_match, for the LMTP client."),
    _P("lmtp_tls_verify_cert_match", "list", "hostname", "As smtp_tls_verify_cert_match, for the LMTP client."),
    _P("lmtp_tls_secure_cert_match", "list", "nexthop", "As smtp_tls_secure_cert_match, for the LMTP client."),
    _P("lmtp_tls_loglevel", "int", "0", "As smtp_tls_loglevel, for the LMTP client.", 0),
    _P("lmtp_tls_cert_file", "str", "", "As smtp_tls_cert_file, for the LMTP client."),
    _P("lmtp_tls_key_file", "str", "$lmtp_tls_cert_file", "As smtp_tls_key_file, for the LMTP client."),
    _P("sender_dependent_relayhost_maps", "list", "", "Tables of relayhost by envelope sender, then @domain (DUNNO: keep relayhost)."),
    _P("sender_dependent_default_transport_maps", "list", "", "Tables of default_transport by envelope sender, then @domain (DUNNO: keep default_transport)."),
    _P("empty_address_relayhost_maps_lookup_key", "str", "<>", "sender_dependent_relayhost_maps key for the null sender."),
    _P("empty_address_default_transport_maps_lookup_key", "str", "<>", "sender_dependent_default_transport_maps key for the null sender."),
    # --- submission --------------------------------------------------------
    _P("authorized_submit_users", "list", "static:anyone", "Users allowed to submit with sendmail."),
    _P("authorized_mailq_users", "list", "static:anyone", "Users allowed to list the queue."),
    _P("authorized_flush_users", "list", "static:anyone", "Users allowed to flush the queue."),
    _P("sendmail_path", "str", "/usr/sbin/sendmail", "Path of the sendmail command."),
    _P("newaliases_path", "str", "/usr/bin/newaliases", "Path of the newaliases command."),
    _P("mailq_path", "str", "/usr/bin/mailq", "Path of the mailq command."),
    _P("default_database_type", "str", "lmdb", "Table type when none is given."),
    _P("smtpd_sasl_auth_enable", "bool", "no", "Offer SMTP AUTH."),
    _P("smtpd_tls_auth_only", "bool", "yes", "Offer AUTH only over TLS."),
    _P("smtpd_tls_wrappermode", "bool", "no", "Implicit TLS (port 465)."),
    _P("smtpd_sasl_type", "str", "passwd-file", "SMTP AUTH password source: passwd-file or dovecot."),
    _P("smtpd_sasl_path", "str", "private/auth", "Dovecot auth socket (relative to queue_directory, or absolute)."),
    _P("smtpd_sasl_service", "str", "smtp", "Service name sent to Dovecot's auth server."),
    _P("smtpd_sasl_password_file", "str", "$config_directory/sasl_passwd", "Password hash file for smtpd_sasl_type = passwd-file (postpy passwd)."),
    _P("smtpd_sasl_failure_delay", "time", "1s", "Wait before a 535 reply, times the client's recent AUTH failures.", 0),
    _P("smtpd_sasl_failure_limit", "int", "5", "AUTH failures from one client before it is cut off with 421 (0: no limit).", 0),
    _P("smtpd_sasl_failure_window", "time", "10m", "How long a failed AUTH counts against its client.", 1),
    _P("smtpd_sender_login_maps", "list", "", "Tables mapping MAIL FROM addresses to the SASL logins that own them."),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}

# Per-transport parameters (Postfix's ``<transport>_...``): any master.cf
# service name before the suffix; the default refers to the general one.
TRANSPORT_PARAMS: tuple[Param, ...] = (
    _P("_destination_recipient_limit", "int", "$default_destination_recipient_limit",
       "Recipients in one delivery request to this transport at most.", 1),
    _P("_destination_concurrency_limit", "int", "$default_destination_concurrency_limit",
       "Parallel deliveries to one destination through this transport.", 1),
    _P("_time_limit", "time", "$command_time_limit", "Time limit for one delivery by this transport's command.", 1),
)


def declared(name: str) -> Param | None:
    """The declaration of ``name``: from the table, or a per-transport pattern."""
    param = BY_NAME.get(name)
    if param is not None:
        return param
    for pattern in TRANSPORT_PARAMS:
        if name.endswith(pattern.name) and len(name) > len(pattern.name):
            return Param(name, pattern.type, pattern.default, pattern.description, pattern.min, pattern.max)
    return None


# Parameters that are set by the reader, not by main.cf.
READ_ONLY = frozenset({"config_directory"})
