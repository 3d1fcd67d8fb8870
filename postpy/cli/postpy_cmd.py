"""postpy: start, stop, reload and inspect the mail system (Postfix's postfix(1)).

``postpy [-c DIR] start|start-fg|stop|abort|reload|status|check|flush``

- ``start`` checks the configuration and queue, then runs master as a
  daemon (python-daemon) and waits until it holds its pid file lock.
- ``start-fg`` runs master in the foreground (systemd ``Type=simple``,
  containers, and ``make run``).
- ``stop`` sends SIGTERM and waits until master has released its lock:
  deliveries in flight finish and are recorded first (bounded); ``abort``
  sends SIGINT: master kills its children at once.
- ``reload`` sends SIGHUP; ``status`` reports whether master runs;
  ``check`` verifies (and repairs) the queue directory, mail_owner and the
  configuration files; ``flush`` asks qmgr to retry deferred mail now.
- ``passwd add|delete|list`` manages SMTP AUTH users
  (:mod:`postpy.cli.passwd_cmd`).

Exit status: 0 on success, 1 when the mail system is not in the state the
command needs (as Postfix), and sysexits codes for usage and config errors.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from postpy.cli import passwd_cmd, selfcheck
from postpy.config.maincf import Config, ConfigError, config_dir_from, load_config
from postpy.config.mastercf import load_master_cf
from postpy.util import maillog, privs
from postpy.util.stdfds import ensure_std_fds
from postpy.util.sysexits import EX_CONFIG

WAIT_LIMIT = 30.0
START_LIMIT = 30.0     # master reports ready or dies well before this


def _config(ctx: click.Context) -> Config:
    try:
        return load_config(ctx.obj["config_dir"])
    except ConfigError as exc:
        click.echo(f"postpy: fatal: {exc}", err=True)
        sys.exit(EX_CONFIG)


def _queue_dir(cfg: Config) -> str:
    return os.path.abspath(cfg.get_path("queue_directory"))


def _running(cfg: Config) -> int | None:
    from postpy.master.supervisor import running_pid

    return running_pid(_queue_dir(cfg))


def _wait(predicate: object, limit: float = WAIT_LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def check_system(cfg: Config, *, repair: bool, probe: bool = True) -> tuple[list[str], list[str]]:
    """(errors, notes): errors stop the mail system from running; notes are
    warnings and queue layout problems (repaired when ``repair``).  ``probe``:
    also run the interpreter as mail_owner (``postpy check``; start skips
    it: daemons load what they need before dropping privileges, and the
    probe costs a second of CPU)."""
    from postpy.queue import layout
    from postpy.tables import check as tables_check

    errors = list(cfg.validate())
    notes = list(cfg.warnings)
    notes += tables_check.unavailable_tables(cfg)
    try:
        load_master_cf(cfg.config_dir)
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        owner = privs.mail_owner_identity(cfg.get("mail_owner"))
    except privs.PrivilegeError as exc:
        errors.append(f"mail_owner: {exc} (create it with `make install` or useradd --system)")
        return errors, notes
    if os.getuid() == 0 and owner.uid == 0:
        errors.append("mail_owner must not be root")
        return errors, notes
    if probe:
        errors += selfcheck.check_mail_owner_can_run(cfg, owner, cfg.get("mail_owner"))
    try:
        notes += layout.check_layout(_queue_dir(cfg), owner.uid, owner.gid, repair=repair)
    except OSError as exc:
        errors.append(f"queue directory {_queue_dir(cfg)}: {exc.strerror}")
    return errors, notes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "config_dir", metavar="DIR", help="configuration directory (default $MAIL_CONFIG or /etc/postpy)")
@click.pass_context
def cli(ctx: click.Context, config_dir: str | None) -> None:
    """Control the postpy mail system."""
    ctx.obj = {"config_dir": config_dir_from(config_dir)}
    os.environ["MAIL_CONFIG"] = ctx.obj["config_dir"]


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Verify and repair the queue directory; report configuration errors."""
    cfg = _config(ctx)
    errors, notes = check_system(cfg, repair=True)
    for note in notes:
        click.echo(f"postpy/postpy-script: warning: {note}", err=True)
    for error in errors:
        click.echo(f"postpy/postpy-script: error: {error}", err=True)
    sys.exit(EX_CONFIG if errors else 0)


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Report whether the mail system is running."""
    cfg = _config(ctx)
    pid = _running(cfg)
    if pid:
        click.echo(f"postpy/postpy-script: the postpy mail system is running: PID: {pid}", err=True)
        sys.exit(0)
    click.echo("postpy/postpy-script: the postpy mail system is not running", err=True)
    sys.exit(1)


def _refuse_if_running(cfg: Config) -> None:
    if _running(cfg):
        click.echo("postpy/postpy-script: fatal: the postpy mail system is already running", err=True)
        sys.exit(1)


def _preflight(cfg: Config) -> None:
    errors, notes = check_system(cfg, repair=True, probe=False)
    for note in notes:
        if "unused parameter" in note:     # repairs of the queue layout are routine
            click.echo(f"postpy/postpy-script: warning: {note}", err=True)
    for error in errors:
        click.echo(f"postpy/postpy-script: fatal: {error}", err=True)
    if errors:
        sys.exit(EX_CONFIG)


@cli.command("start-fg")
@click.pass_context
def start_fg(ctx: click.Context) -> None:
    """Run master in the foreground."""
    from postpy.master.supervisor import run_master

    cfg = _config(ctx)
    _refuse_if_running(cfg)
    _preflight(cfg)
    click.echo("postpy/postpy-script: starting the postpy mail system", err=True)
    sys.exit(run_master(cfg.config_dir))


@cli.command()
@click.pass_context
def start(ctx: click.Context) -> None:
    """Start master as a daemon."""
    cfg = _config(ctx)
    _refuse_if_running(cfg)
    _preflight(cfg)
    click.echo("postpy/postpy-script: starting the postpy mail system", err=True)
    # master writes one byte to this pipe once it runs; if it dies first, the
    # pipe's end-of-file says so at once.
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        import daemon

        from postpy.master.supervisor import run_master

        os.close(ready_r)
        with daemon.DaemonContext(umask=0o022, working_directory="/", detach_process=True,
                                  files_preserve=[ready_w]):
            maillog.forget()
            status = 1
            try:
                status = run_master(cfg.config_dir, ready_fd=ready_w)
            except BaseException as exc:   # stderr is gone: say it in the log
                maillog.setup_from_config("master", cfg)
                maillog.error(f"master: {type(exc).__name__}: {exc}")
            os._exit(status)
    os.close(ready_w)
    os.waitpid(pid, 0)
    if not _master_ready(ready_r, START_LIMIT) or not _wait(lambda: _running(cfg), 5.0):
        click.echo("postpy/postpy-script: fatal: mail system startup failed (see the mail log)", err=True)
        sys.exit(1)


def _master_ready(fd: int, limit: float) -> bool:
    """Wait for master's ready byte; False on end-of-file (it died) or timeout."""
    import select

    try:
        readable, _, _ = select.select([fd], [], [], limit)
        return bool(readable) and os.read(fd, 1) == b"R"
    finally:
        os.close(fd)


def _signal_master(ctx: click.Context, sig: int, verb: str) -> tuple[Config, int]:
    cfg = _config(ctx)
    pid = _running(cfg)
    if not pid:
        click.echo("postpy/postpy-script: fatal: the postpy mail system is not running", err=True)
        sys.exit(1)
    click.echo(f"postpy/postpy-script: {verb}", err=True)
    os.kill(pid, sig)
    return cfg, pid


@cli.command()
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the mail system and wait until every process is gone."""
    cfg, _ = _signal_master(ctx, signal.SIGTERM, "stopping the postpy mail system")
    if not _wait(lambda: not _running(cfg)):
        click.echo("postpy/postpy-script: fatal: master did not stop", err=True)
        sys.exit(1)


@cli.command()
@click.pass_context
def abort(ctx: click.Context) -> None:
    """Stop at once."""
    cfg, _ = _signal_master(ctx, signal.SIGINT, "aborting the postpy mail system")
    _wait(lambda: not _running(cfg))


@cli.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read main.cf and master.cf without dropping connections."""
    _signal_master(ctx, signal.SIGHUP, "refreshing the postpy mail system")


@cli.command()
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Retry deferred mail now."""
    from postpy.ipc.trigger import FLUSH, send_trigger

    cfg = _config(ctx)
    if not send_trigger(os.path.join(_queue_dir(cfg), "public", "qmgr"), FLUSH):
        click.echo("postpy/postpy-script: fatal: cannot reach the queue manager", err=True)
        sys.exit(1)


cli.add_command(passwd_cmd.passwd)   # postpy passwd add|delete|list (SMTP AUTH users)


def main() -> None:
    ensure_std_fds()     # before anything opens a file: master's children inherit 0-2
    maillog.setup("postpy-script", maillog_file="/dev/stderr")
    cli(prog_name="postpy")


if __name__ == "__main__":
    main()
