"""postqueue(1): list the mail queue, or ask for it to be flushed.

    postqueue [-v] [-c config_dir] -f | -i queue_id | -j | -p | -s site

Runs as the invoking user, with no privileges (``mailq`` and
``sendmail -bp`` are the same as ``-p``; ``sendmail -q`` as ``-f``).

- ``-p`` / ``-j``: the listing comes from the showq daemon over
  ``public/showq`` (showq reads the queue as mail_owner and decides, by
  the uid the kernel gives it, whether ``authorized_mailq_users`` allows
  the caller; ``EX_NOPERM`` when not).  ``-j`` copies showq's JSON lines;
  ``-p`` formats them as mailq text in the caller's time zone
  (:mod:`postpy.mail.queue_listing`).  When showq cannot be reached the
  mail system is down: postqueue warns ``Mail system is down -- accessing
  queue directly`` and reads the queue itself, which only root and
  mail_owner can do; anyone else gets a fatal error saying so.
- ``-f``: trigger ``F`` (flush deferred mail) on ``public/qmgr``;
  ``-i ID``: ``I<ID>\\n`` (deliver that message now); ``-s site``:
  ``S<site>\\n`` (deliver mail for that site now).  All three need
  ``authorized_flush_users`` (root and mail_owner always pass) and exit
  ``EX_UNAVAILABLE`` when qmgr cannot be reached.

Exit status: 0, or sysexits: ``EX_USAGE`` for bad usage, ``EX_NOPERM``,
``EX_UNAVAILABLE``, ``EX_CONFIG`` for a broken main.cf.
"""

from __future__ import annotations

import getopt
import os
import re
import socket
import sys
from collections.abc import Iterator

from postpy.cli import cmdlog
from postpy.config.maincf import Config, ConfigError, load_config
from postpy.ipc.trigger import FLUSH, send_trigger
from postpy.util.sysexits import EX_CONFIG, EX_NOPERM, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE

USAGE = "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"
SHOWQ_SOCKET = "public/showq"
QMGR_SOCKET = "public/qmgr"
_QUEUE_ID = re.compile(r"^[A-Za-z0-9]{1,40}\Z")
_SITE = re.compile(r"^[\x21-\x7e]{1,255}\Z")


class Fatal(Exception):
    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.status = status


# -- listing ----------------------------------------------------------------------

def _showq_lines(cfg: Config) -> Iterator[bytes] | None:
    """JSON lines from showq, or None when showq cannot be reached."""
    from postpy.ipc import codec
    from postpy.ipc.messages import ShowqReply, ShowqRequest

    timeout = cfg.get_time("ipc_timeout")
    max_frame = cfg.get_size("ipc_max_frame")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(SHOWQ_SOCKET)
    except OSError:
        sock.close()
        return None

    def lines() -> Iterator[bytes]:
        with sock:
            try:
                codec.send(sock, ShowqRequest("json"))
                reply = codec.expect(codec.recv(sock, "showq", max_frame), ShowqReply, "showq")
                if reply.status == "denied":
                    raise Fatal(reply.text or "not allowed to view the mail queue", EX_NOPERM)
                if reply.status != "ok":
                    raise Fatal(f"showq: {reply.text or reply.status}", EX_SOFTWARE)
                pending = b""
                while True:
                    kind, payload = codec.recv_frame(sock, "showq", max_frame)
                    if kind == codec.END:
                        break
                    if kind != codec.DATA:
                        raise Fatal("showq: unexpected attributes in the listing", EX_SOFTWARE)
                    pending += payload
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        yield line + b"\n"
                if pending:
                    yield pending + b"\n"
            except (EOFError, codec.IpcError, OSError) as exc:
                raise Fatal(f"showq: {exc}", EX_SOFTWARE) from None

    return lines()


def _direct_lines(program: str) -> Iterator[bytes]:
    """Read the queue ourselves (mail system down): root and mail_owner only."""
    from postpy.mail import queue_listing

    cmdlog.warning("Mail system is down -- accessing queue directly")
    try:
        for entry in queue_listing.scan("."):
            yield (queue_listing.to_json(entry) + "\n").encode("utf-8", "surrogateescape")
    except PermissionError:
        raise Fatal(f"Mail system is down, and only root and the mail_owner can read the queue "
                    f"directly (uid {os.getuid()} cannot); start it with `postpy start`",
                    EX_UNAVAILABLE) from None


def _write(out: object, data: bytes) -> None:
    out.write(data)  # type: ignore[attr-defined]


def list_queue(cfg: Config, *, json_mode: bool, program: str = "postqueue") -> int:
    """``-p`` (text) or ``-j`` (JSON) to stdout; the exit status."""
    out = sys.stdout.buffer
    lines = _showq_lines(cfg)
    if lines is None:
        lines = _direct_lines(program)
    try:
        if json_mode:
            for line in lines:
                _write(out, line)
        else:
            from postpy.mail import queue_listing

            entries = (queue_listing.from_json(line) for line in lines)
            null_sender = cfg.get("empty_address_recipient")
            for piece in queue_listing.format_text(entries, null_sender=null_sender):
                _write(out, piece.encode("utf-8", "surrogateescape"))
        out.flush()
    except BrokenPipeError:
        # mailq | head: the reader left; that is not an error worth a message.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except ValueError as exc:
        raise Fatal(f"malformed queue listing from showq: {exc}", EX_SOFTWARE) from None
    return 0


# -- flushing ---------------------------------------------------------------------

def flush_request(mode: str, arg: str) -> bytes:
    """The qmgr trigger for -f, -i ID or -s site; ValueError when arg is bad."""
    if mode == "f":
        return FLUSH
    if mode == "i":
        if not _QUEUE_ID.match(arg):
            raise ValueError(f"invalid queue ID: {arg[:60]!r}")
        return b"I" + arg.encode("ascii") + b"\n"
    if mode == "s":
        if not _SITE.match(arg):
            raise ValueError(f"invalid site name: {arg[:60]!r}")
        return b"S" + arg.encode("ascii") + b"\n"
    raise ValueError(f"unknown flush mode {mode}")


def flush(cfg: Config, mode: str, arg: str = "") -> int:
    from postpy.mail.authorized import AccessError, login_name, privileged_uids, uid_allowed

    try:
        request = flush_request(mode, arg)
    except ValueError as exc:
        raise Fatal(str(exc), EX_USAGE) from None
    uid = os.getuid()
    try:
        allowed = uid_allowed(cfg.get_list("authorized_flush_users"), uid,
                              privileged=privileged_uids(cfg.get("mail_owner")))
    except AccessError as exc:
        raise Fatal(f"authorized_flush_users: {exc}", EX_UNAVAILABLE) from None
    if not allowed:
        raise Fatal(f"User {login_name(uid) or 'unknown'}({uid}) is not allowed to flush "
                    "the mail queue", EX_NOPERM)
    if not send_trigger(QMGR_SOCKET, request):
        what = "mail queue" if mode == "f" else ("message " + arg if mode == "i" else "site " + arg)
        raise Fatal(f"Cannot flush {what} - mail system is down", EX_UNAVAILABLE)
    return 0


# -- entry points -----------------------------------------------------------------

def run(config_dir: str | None, mode: str, arg: str = "", program: str = "postqueue") -> int:
    """One postqueue action (also ``sendmail -bp/-q``, ``mailq``); the exit status."""
    cmdlog.init(program)
    try:
        cfg = load_config(config_dir)
    except ConfigError as exc:
        return cmdlog.fatal(str(exc), EX_CONFIG)
    cmdlog.init(program, cfg)
    queue_directory = cfg.get_path("queue_directory")
    try:
        os.chdir(queue_directory)           # socket paths are queue-relative (sun_path is short)
    except OSError as exc:
        return cmdlog.fatal(f"chdir {queue_directory}: {exc.strerror}", EX_UNAVAILABLE)
    try:
        if mode in ("p", "j"):
            return list_queue(cfg, json_mode=mode == "j", program=program)
        return flush(cfg, mode, arg)
    except Fatal as exc:
        return cmdlog.fatal(str(exc), exc.status)
    except ConfigError as exc:
        return cmdlog.fatal(str(exc), EX_CONFIG)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmdlog.init("postqueue")
    try:
        opts, rest = getopt.getopt(args, "c:fi:jps:v")
    except getopt.GetoptError as exc:
        return cmdlog.fatal(f"{exc}; {USAGE}", EX_USAGE)
    config_dir: str | None = None
    mode, arg = "", ""
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag == "-v":
            continue
        else:
            if mode:
                return cmdlog.fatal(USAGE, EX_USAGE)
            mode, arg = flag[1], value
    if not mode or rest:
        return cmdlog.fatal(USAGE, EX_USAGE)
    return run(config_dir, mode, arg)


if __name__ == "__main__":
    raise SystemExit(main())
