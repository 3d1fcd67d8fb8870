"""sendmail(1), mailq(1): the Sendmail-compatible front door for local mail.

    sendmail [options] [--] [recipient ...]
    mailq                  (= sendmail -bp = postqueue -p)

The program name picks the default mode (``mailq``: ``-bp``;
``newaliases``: ``-I``; anything else: ``-bm``); options may change it
(parsing: :mod:`postpy.cli.sendmail_options`).  Modes:

``-bm`` (default)
    Read a message on stdin (:mod:`postpy.cli.sendmail_input`) and write
    it, with the envelope, into ``maildrop/`` through
    :func:`postpy.queue.maildrop.submit_to_maildrop`, which makes the file
    durable and wakes pickup.  Exit 0 means the message is safely queued,
    whether or not the mail system is running (pickup takes it when it
    starts).  This process has no privileges: the submitter's identity is
    the file's owner as the kernel records it, and pickup logs it as
    ``uid=N``.  Recipients are the arguments (each an address list) plus,
    with ``-t``, those in To/Cc/Bcc (cleanup extracts them again and
    removes Bcc: the ``extract=yes`` attribute).  An unqualified sender or
    recipient is completed with ``$myorigin`` by cleanup.
``-bs``
    An SMTP session on stdin/stdout (:mod:`postpy.cli.sendmail_smtp`).
``-bp`` / mailq, ``-q``, ``-qRsite``, ``-qIid``
    :mod:`postpy.cli.postqueue` ``-p``, ``-f``, ``-s site``, ``-i id``
    (``-q30m`` and the like: nothing to do, exit 0).
``-bi``, ``-I``
    newaliases (:func:`postpy.cli.postalias.newaliases`; ``-oAfile``).
``-bv``
    Report how each recipient would be delivered (transport and next hop,
    the resolution qmgr uses), without sending anything.
``-bd``, ``-bl``
    Refused (``EX_USAGE``): postpy is started with ``postpy start``.
``-bh``, ``-bH``
    Ignored, exit 0.

Errors are one line on stderr, ``sendmail: fatal: ...``, also logged, with
sysexits statuses: ``EX_USAGE`` (64) bad or conflicting options, no
recipients, a recipient argument that is not an address list (named);
``EX_DATAERR`` (65) unreadable input, a newline in ``-f`` or ``-F``
(header injection), a malformed sender, a ``-t`` recipient header that
cannot be parsed (named); ``EX_OSERR`` (71) no login
name for the uid; ``EX_TEMPFAIL`` (75) the queue file could not be
written; ``EX_NOPERM`` (77) not in ``authorized_submit_users``.

Start-up cost matters (cron, scripts): the enqueue path imports the
config reader, the maildrop writer and the header reader, nothing else
(no asyncio, dns, click or email; addresses are parsed by
:mod:`postpy.mail.addrlist`, for arguments, ``-t`` and ``-bv`` alike).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from itertools import chain

from postpy.cli import cmdlog
from postpy.cli.sendmail_options import Options, UsageError, parse_args
from postpy.config.maincf import Config, ConfigError, load_config
from postpy.util.sysexits import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOPERM,
    EX_NOUSER,
    EX_OSERR,
    EX_TEMPFAIL,
    EX_USAGE,
)

PROGRAM_MODES = {"mailq": "p", "newaliases": "i"}


def _config_dir(opts: Options) -> str | None:
    directory = opts.config_dir
    if directory and os.path.isfile(directory):
        directory = os.path.dirname(directory) or "."     # -C /path/main.cf
    return directory


def _login(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _no_recipients_allowed(opts: Options, what: str) -> int | None:
    if opts.recipients:
        return cmdlog.fatal(f"{what} mode requires no recipient", EX_USAGE)
    return None


# -- enqueue (-bm) ------------------------------------------------------------------

def _check_submit_acl(cfg: Config, uid: int, login: str | None) -> int | None:
    elements = cfg.get_list("authorized_submit_users")
    if [e.lower() for e in elements] == ["static:anyone"]:
        return None
    from postpy.mail.authorized import AccessError, user_allowed

    try:
        if user_allowed(elements, login):
            return None
    except AccessError as exc:
        return cmdlog.fatal(f"authorized_submit_users: {exc}", EX_TEMPFAIL)
    return cmdlog.fatal(f"User {login or 'unknown'}({uid}) is not allowed to submit mail", EX_NOPERM)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _envelope_attrs(opts: Options) -> dict[str, str] | int:
    attrs: dict[str, str] = {}
    full_name = opts.full_name
    if full_name is not None and ("\n" in full_name or "\r" in full_name):
        return cmdlog.fatal("-F option value contains a newline or carriage return: "
                            "header injection attempt refused", EX_DATAERR)
    if full_name is None:
        env_name = os.environ.get("NAME", "")
        full_name = env_name if env_name and not _has_control(env_name) else None
    if full_name:
        attrs["full_name"] = full_name
    if opts.extract:
        attrs["extract"] = "yes"
    for name, value in (("envid", opts.envid), ("ret", opts.ret), ("body", opts.body)):
        if value:
            attrs[name] = value
    if opts.smtputf8:
        attrs["smtputf8"] = "yes"
    return attrs


def _unique(addresses: list[str]) -> list[str]:
    return list(dict.fromkeys(addresses))


def enqueue(opts: Options, cfg: Config) -> int:
    from postpy.cli.sendmail_input import (
        AddressError,
        InputError,
        InputFilter,
        argument_recipients,
        header_recipients,
        read_chunks,
        split_header_block,
    )
    from postpy.queue import qfile
    from postpy.queue.maildrop import MaildropError, submit_to_maildrop

    uid = os.getuid()
    login = _login(uid)
    denied = _check_submit_acl(cfg, uid, login)
    if denied is not None:
        return denied
    sender = opts.sender
    if sender is None:
        if login is None:
            return cmdlog.fatal(f"no login name found for user ID {uid}", EX_OSERR)
        sender = login
    if "\n" in sender or "\r" in sender:
        return cmdlog.fatal("-f option value contains a newline or carriage return: "
                            "header injection attempt refused", EX_DATAERR)
    if _has_control(sender):
        return cmdlog.fatal(f"bad sender address syntax: {sender[:80]!r}", EX_DATAERR)
    if opts.verp and not sender:
        return cmdlog.fatal("-XV requires a non-null sender address", EX_USAGE)
    attrs = _envelope_attrs(opts)
    if isinstance(attrs, int):
        return attrs
    try:
        recipients = argument_recipients(opts.recipients)
    except AddressError as exc:
        return cmdlog.fatal(str(exc), EX_USAGE)
    if not recipients and not opts.extract:
        return cmdlog.fatal("no recipient addresses: give them as arguments, or use -t to take "
                            "them from the message header", EX_USAGE)
    who = f"{login or 'unknown'}({uid})"
    filt = InputFilter(dot_ends_input=not opts.ignore_dots)
    chunks: Iterator[bytes] = read_chunks(lambda n: os.read(0, n), filt)
    rcpts = [qfile.Recipient(address, notify=opts.notify) for address in _unique(recipients)]
    try:
        if opts.extract:
            reader, held = split_header_block(chunks, cfg.get_size("header_size_limit"),
                                              cfg.get_int("header_count_limit"))
            chunks = chain(held, chunks)
            # Header recipients get -N's NOTIFY too (as Postfix's sendmail
            # does); cleanup extracts them again but keeps an address that is
            # already in the envelope, so these, with their NOTIFY, win.
            given = {r.address for r in rcpts}
            try:
                found = header_recipients(reader)
            except AddressError as exc:
                return cmdlog.fatal(str(exc), EX_DATAERR)
            rcpts += [qfile.Recipient(address, notify=opts.notify)
                      for address in _unique(found) if address not in given]
            if not rcpts:
                # EX_DATAERR: the input is what is wrong (Postfix itself says
                # EX_USAGE here; the exit status table in README.md notes it).
                return cmdlog.fatal("No recipient addresses found in message header", EX_DATAERR)
        submit_to_maildrop(cfg.get_path("queue_directory"), sender, rcpts, chunks, attrs)
    except InputError as exc:
        return cmdlog.fatal(f"{who}: {exc}", EX_DATAERR)
    except ValueError as exc:
        return cmdlog.fatal(f"{who}: {exc}", EX_DATAERR)
    except MaildropError as exc:
        return cmdlog.fatal(f"{who}: {exc}", EX_TEMPFAIL)
    except OSError as exc:
        return cmdlog.fatal(f"{who}: cannot queue the message: {exc.strerror or exc}", EX_TEMPFAIL)
    return 0


# -- stand-alone SMTP (-bs) -----------------------------------------------------------

def smtp_session(opts: Options, cfg: Config) -> int:
    from postpy.cli.sendmail_smtp import SessionSettings, StdioSession
    from postpy.queue import qfile
    from postpy.queue.maildrop import submit_to_maildrop

    uid = os.getuid()
    denied = _check_submit_acl(cfg, uid, _login(uid))
    if denied is not None:
        return denied
    queue_directory = cfg.get_path("queue_directory")
    settings = SessionSettings(
        hostname=cfg.get("myhostname"), banner=cfg.get("smtpd_banner"),
        size_limit=cfg.get_size("message_size_limit"),
        recipient_limit=cfg.get_int("smtpd_recipient_limit"),
        vrfy=not cfg.get_bool("disable_vrfy_command"),
        error_limit=cfg.get_int("smtpd_hard_error_limit"))

    def submit(sender: str, rcpts: list[qfile.Recipient], content: Iterator[bytes], attrs: dict[str, str]) -> str:
        return submit_to_maildrop(queue_directory, sender, rcpts, content, attrs)

    return StdioSession(settings, sys.stdin.buffer, sys.stdout.buffer, submit).run()


# -- verify (-bv) -----------------------------------------------------------------------

def _local_user_known(cfg: Config, address: str) -> bool:
    """Is the local part in local_recipient_maps?  True when it cannot be told."""
    from postpy.tables.maps import TableError, open_table

    specs = cfg.get_list("local_recipient_maps")
    if not specs:
        return True
    local = address.rpartition("@")[0] if "@" in address else address
    keys = [local.lower()]
    for ch in cfg.get("recipient_delimiter"):
        if ch in local:
            keys.append(local.split(ch, 1)[0].lower())
            break
    unsure = False
    for spec in specs:
        for key in keys:
            try:
                if open_table(spec).lookup(key) is not None:
                    return True
            except TableError:
                unsure = True
    return unsure


def describe(cfg: Config, address: str) -> tuple[str, bool]:
    """``address... deliverable via T to H`` (or why not) and whether it is deliverable."""
    from postpy.cli.verify import verdict
    from postpy.qmgr.resolve import resolve

    qualified = address
    if address and "@" not in address:
        qualified = f"{address}@{cfg.get('myorigin')}"
    route = resolve(cfg, qualified)
    text, ok = verdict(cfg, qualified, route, lambda: _local_user_known(cfg, qualified))
    return f"{address}... {text}", ok


def verify(opts: Options, cfg: Config) -> int:
    from postpy.cli.sendmail_input import AddressError, argument_recipients

    if opts.extract or opts.notify or opts.ret or opts.verbose == 1:
        return cmdlog.fatal("-bv cannot be used with -t, -N, -R or a single -v", EX_USAGE)
    if not opts.recipients:
        return cmdlog.fatal("-bv needs recipient addresses as arguments", EX_USAGE)
    try:
        recipients = argument_recipients(opts.recipients)
    except AddressError as exc:
        return cmdlog.fatal(str(exc), EX_USAGE)
    status = 0
    for address in recipients:
        line, ok = describe(cfg, address)
        sys.stdout.write(line + "\n")
        if not ok:
            status = EX_NOUSER
    sys.stdout.flush()
    return status


# -- other modes -------------------------------------------------------------------------

def queue_run(opts: Options, program: str) -> int:
    refused = _no_recipients_allowed(opts, "flush queue")
    if refused is not None:
        return refused
    if opts.queue_action == "interval":
        return 0
    from postpy.cli import postqueue

    mode = {"": "f", "R": "s", "I": "i"}[opts.queue_action]
    return postqueue.run(_config_dir(opts), mode, opts.queue_arg, program=program)


def run(args: list[str], *, program: str = "sendmail", default_mode: str = "m") -> int:
    """The whole command; returns the exit status."""
    cmdlog.init(program)
    try:
        opts = parse_args(args, default_mode)
    except UsageError as exc:
        return cmdlog.fatal(str(exc), EX_USAGE)
    mode = opts.mode
    if mode in ("d", "l"):
        return cmdlog.fatal(f"-b{mode} is not supported: start the mail system with "
                            "`postpy start` (or its init script)", EX_USAGE)
    if mode in ("h", "H"):
        return 0
    if mode == "p":
        refused = _no_recipients_allowed(opts, "display queue")
        if refused is not None:
            return refused
        from postpy.cli import postqueue

        return postqueue.run(_config_dir(opts), "p", program=program)
    if mode == "q":
        return queue_run(opts, program)
    if mode == "i":
        refused = _no_recipients_allowed(opts, "alias database")
        if refused is not None:
            return refused
        from postpy.cli.postalias import newaliases

        databases = [opts.alias_database] if opts.alias_database else None
        return newaliases(_config_dir(opts), databases, opts.verbose)
    try:
        cfg = load_config(_config_dir(opts))
    except ConfigError as exc:
        return cmdlog.fatal(str(exc), EX_CONFIG)
    cmdlog.init(program, cfg)
    for text in opts.warnings:
        cmdlog.warning(text)
    try:
        if mode == "s":
            refused = _no_recipients_allowed(opts, "stand-alone")
            return refused if refused is not None else smtp_session(opts, cfg)
        if mode == "v":
            return verify(opts, cfg)
        return enqueue(opts, cfg)
    except ConfigError as exc:
        return cmdlog.fatal(str(exc), EX_CONFIG)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sendmail`` (and of any name linked to it)."""
    argv = sys.argv if argv is None else argv
    program = os.path.basename(argv[0]) if argv else "sendmail"
    default_mode = PROGRAM_MODES.get(program, "m")
    if program not in PROGRAM_MODES:
        program = "sendmail"
    return run(argv[1:], program=program, default_mode=default_mode)


def mailq_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mailq``: ``sendmail -bp``."""
    args = sys.argv[1:] if argv is None else argv
    return run(args, program="mailq", default_mode="p")


if __name__ == "__main__":
    raise SystemExit(main())
