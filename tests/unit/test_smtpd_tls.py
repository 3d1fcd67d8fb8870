"""STARTTLS: offer, handshake, state reset, injection defence, encrypt level."""

from __future__ import annotations

import smtplib
import ssl
import warnings
from typing import Any

from test_smtpd_harness import greet

pytest_plugins = ["test_smtpd_harness"]   # the smtpd, smtpd_factory and tls_cert fixtures


def tls_server(factory: Any, cert: tuple[str, str], **params: str) -> Any:
    return factory(smtpd_tls_cert_file=cert[0], smtpd_tls_key_file=cert[1], **params)


def test_starttls_offered_and_works(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert)
    c = h.connect()
    assert c.reply().startswith("220")
    assert "250-STARTTLS" in c.cmd("EHLO client.example").split("\n")
    assert c.cmd("MAIL FROM:<before@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.starttls()
    assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version() in ("TLSv1.2", "TLSv1.3")
    # Everything from before TLS is forgotten: the MAIL, and the EHLO.
    assert c.cmd("RCPT TO:<alice@test.example>") == "503 5.5.1 Error: need MAIL command"
    ehlo = c.cmd("EHLO client.example").split("\n")
    assert "250-STARTTLS" not in ehlo and "250 CHUNKING" in ehlo
    assert c.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@test.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: secret\r\n\r\nover TLS\r\n.\r\n").startswith("250 2.0.0 Ok: queued")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    msg, = h.wait_messages(1)
    assert msg.envelope.attrs["protocol"] == "ESMTPS"
    assert msg.envelope.attrs["tls"].startswith("TLSv1.")
    assert " with cipher " in msg.envelope.attrs["tls"]
    h.wait_log(r"Anonymous TLS connection established from localhost\[127\.0\.0\.1\]: TLSv1\.\d "
               r"with cipher \S+ \(\d+/\d+ bits\)")
    h.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=2 starttls=1/3 mail=2 rcpt=1/2 "
               r"data=1 quit=1 commands=8/11")


def test_pipelined_commands_before_handshake_are_discarded(
        smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert)
    c = h.connect()
    greet(c)
    # A man in the middle appends commands to the client's STARTTLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@test.example>\r\n")
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    c.starttls()
    # No replies to the injected commands arrive, and they had no effect.
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("EHLO client.example").startswith("250-")
    assert c.cmd("RCPT TO:<alice@test.example>") == "503 5.5.1 Error: need MAIL command"
    assert c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    assert not h.cleanup.messages


def test_smtplib_starttls(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as s:
        s.starttls(context=context)
        s.sendmail("a@example.org", ["bob@test.example"], b"Subject: t\r\n\r\nx\r\n")
    assert h.wait_messages(1)[0].content == b"Subject: t\n\nx\n"


def test_encrypt_level_requires_starttls(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert, smtpd_tls_security_level="encrypt")
    c = h.connect()
    greet(c)
    assert c.cmd("MAIL FROM:<a@example.org>") == "530 5.7.0 Must issue a STARTTLS command first"
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.starttls()
    greet_again = c.cmd("EHLO client.example")
    assert greet_again.startswith("250-")
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"


def test_encrypt_level_without_certificate(smtpd_factory: Any) -> None:
    h = smtpd_factory(smtpd_tls_security_level="encrypt")
    c = h.connect()
    greet(c)
    assert c.cmd("STARTTLS") == "454 4.7.0 TLS not available due to local problem"
    assert c.cmd("MAIL FROM:<a@example.org>") == "530 5.7.0 Must issue a STARTTLS command first"


def test_level_none_does_not_offer(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert, smtpd_tls_security_level="none")
    c = h.connect()
    c.reply()
    assert "250-STARTTLS" not in c.cmd("EHLO x").split("\n")
    assert c.cmd("STARTTLS") == "502 5.5.1 Error: command not implemented"


def test_failed_handshake_is_logged(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert)
    c = h.connect()
    greet(c)
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.send(b"this is not a TLS client hello\r\n" * 4)
    assert c.closed()
    h.wait_log(r"SSL_accept error from localhost\[127\.0\.0\.1\]")
    h.wait_log(r"lost connection after STARTTLS from localhost\[127\.0\.0\.1\]")


def test_tls_below_1_2_refused(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert, smtpd_tls_protocols="!SSLv2, !SSLv3")
    c = h.connect()
    greet(c)
    assert c.cmd("STARTTLS").startswith("220")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.minimum_version = ssl.TLSVersion.TLSv1
    except (ValueError, ssl.SSLError):
        return      # this OpenSSL cannot even offer old versions
    try:
        context.wrap_socket(c.sock)
    except (ssl.SSLError, OSError):
        pass
    else:
        raise AssertionError("a TLS 1.1 handshake succeeded")


def test_wrapper_mode(smtpd_factory: Any, tls_cert: tuple[str, str]) -> None:
    h = tls_server(smtpd_factory, tls_cert, smtpd_tls_wrappermode="yes")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", h.port, timeout=10, context=context) as s:
        code, text = s.ehlo()
        assert code == 250 and b"STARTTLS" not in text
        s.sendmail("a@example.org", ["bob@test.example"], b"Subject: t\r\n\r\nwrapped\r\n")
    msg, = h.wait_messages(1)
    assert msg.envelope.attrs["protocol"] == "ESMTPS"
