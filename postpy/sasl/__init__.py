"""SASL for SMTP AUTH (RFC 4954): who may submit mail as whom.

smtpd uses this package when ``smtpd_sasl_auth_enable = yes`` (the
submission and smtps services of master.cf).  Nothing here touches the
queue; it decides whether a client proved an identity.

- :mod:`~postpy.sasl.mechanisms`: the server side of PLAIN (RFC 4616) and
  LOGIN, as I/O-free state machines that turn client responses into a
  username and password.
- :mod:`~postpy.sasl.backend`: the one interface every password source
  implements (``authenticate(username, password, client) -> AuthResult``)
  and the factory that picks one from ``smtpd_sasl_type``.
- :mod:`~postpy.sasl.passwdfile`: ``smtpd_sasl_type = passwd-file``, a
  local file of scrypt hashes managed with ``postpy passwd``.
- :mod:`~postpy.sasl.dovecot`: ``smtpd_sasl_type = dovecot``, a client of
  Dovecot's auth socket.
- :mod:`~postpy.sasl.ratelimit`: per-client failure delay and cut-off.
- :mod:`~postpy.sasl.server`: the AUTH command dialogue (334 challenges,
  235/535/454/501/504 replies) and its log lines.
- :mod:`~postpy.sasl.senderlogin`: ``smtpd_sender_login_maps`` and
  ``reject_sender_login_mismatch``.

A password, or the base64 that carries one, is never logged, never put in
an exception text and never kept longer than one authentication.
"""
