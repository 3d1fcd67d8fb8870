"""How a TLS session is described in logs and Received: headers (Postfix's shape).

Shared by the SMTP server (Received: ``using TLSv1.3 with cipher ...``) and
the SMTP client (the ``TLS connection established`` log line).
"""

from __future__ import annotations

import ssl


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``."""
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "TLS"
    if not cipher:
        return version
    name, _, bits = cipher
    return f"{version} with cipher {name} ({bits}/{bits} bits)"
