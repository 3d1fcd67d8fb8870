"""Real SMTP peers for the smtp client's integration tests, all on loopback.

- :class:`SmtpSink`: Postfix's ``smtp-sink`` (Debian package postfix) on
  127.0.0.1:<free port>, with its options passed through (``-r RCPT`` for
  4xx, ``-f RCPT`` for 5xx, ...), each message dumped to a file so tests
  can count and read what arrived.
- :class:`ThreadPeer`: a small Python SMTP server in a thread for what
  smtp-sink cannot do: drop the connection in the middle of DATA (for the
  first N messages), STARTTLS with a given certificate, and keep exactly
  what arrived.
- :func:`make_cert`: a self-signed certificate made with ``openssl req``.

``SMTP_SINK`` is None when the program is missing; tests then skip, and
only when not root (as root, scripts/test-deps installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peer_process
from conftest import IS_ROOT, free_port, wait_for

SMTP_SINK = shutil.which("smtp-sink") or next(
    (p for p in ("/usr/sbin/smtp-sink",) if os.access(p, os.X_OK)), None)


def missing_reason(program: str) -> str:
    return f"{program} is not installed and this is not root (scripts/test-deps installs it as root)"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class SmtpSink:
    """``smtp-sink [options] 127.0.0.1:port backlog``, dumping messages into ``dump_dir``."""

    def __init__(self, *options: str, host: str = "127.0.0.1", dump: bool = True) -> None:
        assert SMTP_SINK, missing_reason("smtp-sink")
        self.host = host
        self.port = free_port(host)
        # smtp-sink writes as the -u user (nobody): pytest's tmp_path is not reachable for it.
        self.dump_dir = Path(tempfile.mkdtemp(prefix="postpy-sink-"))
        os.chmod(self.dump_dir, 0o777)
        argv = [SMTP_SINK, *options] if not dump else [SMTP_SINK, "-d", f"{self.dump_dir}/msg.", *options]
        if IS_ROOT:
            argv[1:1] = ["-u", "nobody"]
        argv += [f"{host}:{self.port}", "100"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is not None or port_open(self.port, host), 10, "smtp-sink")
        if self.proc.poll() is not None:
            raise AssertionError(f"smtp-sink exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump_dir.glob("msg.*"))]

    def stop(self) -> None:
        peer_process.terminate(self.proc)
        shutil.rmtree(self.dump_dir, ignore_errors=True)

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_cert(directory: Path, name: str = "peer", cn: str = "localhost") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    os.chmod(cert, 0o644)
    return cert, key


@dataclass
class PeerState:
    drop_in_data: int = 0                 # drop the connection mid-DATA for this many messages
    tls: ssl.SSLContext | None = None
    name: str = "pypeer.test"
    messages: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    tls_sessions: int = 0
    connections: int = 0
    # Called with (sender, recipients, content without dot-stuffing or the final
    # dot) before the reply to DATA; returns that reply (a content filter).
    on_message: Callable[[str, list[str], bytes], str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30
    server: _Server

    def say(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        state = self.server.state
        with state.lock:
            state.connections += 1
        encrypted = False
        sender, rcpts = "", []
        self.say(f"220 {state.name} ESMTP test peer")
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                feats = ["PIPELINING", "8BITMIME", "SIZE 10240000"]
                if state.tls and not encrypted:
                    feats.append("STARTTLS")
                lines = [state.name, *feats]
                self.say("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}" for i, t in enumerate(lines)))
            elif verb == "STARTTLS" and state.tls:
                self.say("220 2.0.0 Ready to start TLS")
                self.connection = state.tls.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                encrypted = True
                with state.lock:
                    state.tls_sessions += 1
            elif verb == "MAIL":
                sender, rcpts = line[line.find("<") + 1:line.find(">")], []
                self.say("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(line[line.find("<") + 1:line.find(">")])
                self.say("250 2.1.5 Ok")
            elif verb == "DATA":
                self.say("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                with state.lock:
                    drop = state.drop_in_data > 0
                    if drop:
                        state.drop_in_data -= 1
                while True:
                    chunk = self.rfile.readline(1 << 20)
                    if not chunk:
                        return
                    data += chunk
                    if drop:                 # got some content: hang up without a reply
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if chunk == b".\r\n":
                        break
                with state.lock:
                    state.messages.append(bytes(data))
                    state.envelopes.append((sender, rcpts))
                    count = len(state.messages)
                if state.on_message is not None:
                    self.say(state.on_message(sender, rcpts, unstuff(bytes(data))))
                else:
                    self.say(f"250 2.0.0 Ok: queued as PY{count}")
            elif verb == "QUIT":
                self.say("221 2.0.0 Bye")
                return
            else:
                self.say("250 2.0.0 Ok")


def unstuff(data: bytes) -> bytes:
    """SMTP DATA as received (CRLF lines, dot-stuffed, final dot) -> the message."""
    lines = data.split(b"\r\n")
    if lines[-2:] == [b".", b""]:
        lines = lines[:-2] + [b""]
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: PeerState


class _Server6(_Server):
    address_family = socket.AF_INET6


class ThreadPeer:
    def __init__(self, state: PeerState | None = None, host: str = "127.0.0.1") -> None:
        self.state = state or PeerState()
        self.server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
        self.server.state = self.state
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def __enter__(self) -> ThreadPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
