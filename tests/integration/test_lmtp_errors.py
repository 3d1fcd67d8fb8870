"""The lmtp agent against bad peers, through a real master: nobody listening, and a
stand-in LMTP server on a real unix socket that answers garbage.  Each case gives a
clear log line, defers (never bounces) and keeps the message in the queue."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MTA, free_port, wait_for

FAST_RETRY = {"minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s"}


class GarbageLmtp:
    """Greets, answers LHLO/MAIL/RCPT/DATA like an LMTP server, then what ``script`` says:
    ``lhlo`` -> a line that is no reply at all to LHLO; ``final`` -> after the dot, one
    good reply for the first recipient and garbage for the second."""

    def __init__(self, path: Path, script: str) -> None:
        self.path = path
        self.script = script
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.sessions = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.sessions += 1
            with conn:
                conn.settimeout(10)
                try:
                    self._serve(conn.makefile("rwb"))
                except (OSError, ValueError):
                    pass

    def _serve(self, f) -> None:  # type: ignore[no-untyped-def]
        def say(text: str) -> None:
            f.write(text.encode() + b"\r\n")
            f.flush()

        say("220 garbage.test LMTP")
        rcpts = 0
        while line := f.readline():
            verb = line[:4].upper()
            if verb == b"LHLO":
                say("hello, I am not speaking LMTP today" if self.script == "lhlo"
                    else "250-garbage.test\r\n250 PIPELINING")
            elif verb == b"RCPT":
                rcpts += 1
                say("250 2.1.5 OK")
            elif verb == b"DATA":
                say("354 go ahead")
                while f.readline() not in (b".\r\n", b""):
                    pass
                say("250 2.0.0 <first> Saved")
                for _ in range(rcpts - 1):
                    f.write(b"\x01 nonsense \xff\r\n")
                f.flush()
                rcpts = 0
            elif verb == b"QUIT":
                say("221 bye")
                return
            else:
                say("250 OK")

    def close(self) -> None:
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postpy-lmtp-bad-"))
    os.chmod(path, 0o755)           # the agent runs as mail_owner
    yield path
    shutil.rmtree(path, ignore_errors=True)


def submit(mta: MTA, rcpts: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
        client.sendmail("sender@test.example", rcpts, b"Subject: bad peer\r\n\r\nhello\r\n")
    return mta.wait_log(rf"(\w+): from=<sender@test.example>, size=\d+, nrcpt={len(rcpts)}", 20).group(1)


def assert_kept(mta: MTA, qid: str) -> None:
    wait_for(lambda: qid in mta.queue_ids("deferred"), 20, f"{qid} in the deferred queue")
    assert "status=bounced" not in mta.log() and "from=<>" not in mta.log()


def test_unreachable_servers_defer(mta_factory, sockdir) -> None:
    port = free_port()
    mta = mta_factory(transport_maps=f"inline:{{ tcp.test=lmtp:[127.0.0.1]:{port}, "
                                     f"unix.test=lmtp:unix:{sockdir}/nobody-home }}", **FAST_RETRY)
    qid = submit(mta, ["a@tcp.test", "b@unix.test"])
    mta.wait_log(rf"postpy/lmtp\[\d+\]: {qid}: to=<a@tcp.test>, relay=none, .*dsn=4.4.1, status=deferred "
                 rf"\(connect to 127.0.0.1\[127.0.0.1\]:{port}: Connection refused\)", 30)
    mta.wait_log(rf"{qid}: to=<b@unix.test>, relay=none, .*dsn=4.4.1, status=deferred \(connect to "
                 rf"{sockdir}/nobody-home\[{sockdir}/nobody-home\]: No such file or directory\)", 30)
    assert_kept(mta, qid)


def test_garbage_to_lhlo_defers(mta_factory, sockdir) -> None:
    peer = GarbageLmtp(sockdir / "lmtp", "lhlo")
    try:
        mta = mta_factory(transport_maps=f"inline:{{ g.test=lmtp:unix:{sockdir}/lmtp }}", **FAST_RETRY)
        qid = submit(mta, ["a@g.test"])
        where = f"{sockdir}/lmtp\\[{sockdir}/lmtp\\]"
        mta.wait_log(rf"{qid}: to=<a@g.test>, relay={where}, .*dsn=4.5.0, status=deferred \(host {where} "
                     r"malformed reply: 'hello, I am not speaking LMTP today' while performing the LHLO "
                     r"handshake\)", 30)
        assert_kept(mta, qid)
    finally:
        peer.close()


def test_garbage_after_the_dot_defers_only_that_recipient(mta_factory, sockdir) -> None:
    peer = GarbageLmtp(sockdir / "lmtp", "final")
    try:
        mta = mta_factory(transport_maps=f"inline:{{ g.test=lmtp:unix:{sockdir}/lmtp }}", **FAST_RETRY)
        qid = submit(mta, ["first@g.test", "second@g.test"])
        where = f"{sockdir}/lmtp\\[{sockdir}/lmtp\\]"
        mta.wait_log(rf"{qid}: to=<first@g.test>, relay={where}, .*dsn=2.0.0, status=sent "
                     r"\(250 2.0.0 <first> Saved\)", 30)
        mta.wait_log(rf"{qid}: to=<second@g.test>, relay={where}, .*dsn=4.5.0, status=deferred \(host "
                     rf"{where} malformed reply: .* while sending end of data -- message may be sent "
                     r"more than once\)", 30)
        assert_kept(mta, qid)
        # The retry carries only the recipient still open.
        wait_for(lambda: mta.log().count("to=<second@g.test>") >= 2, 30, "a retry")
        assert mta.log().count("to=<first@g.test>") == 1
    finally:
        peer.close()
