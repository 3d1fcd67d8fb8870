"""``postpy passwd``: manage the SMTP AUTH password file.

``postpy [-c DIR] passwd add USER``     add USER, or set a new password
``postpy [-c DIR] passwd delete USER``  remove USER
``postpy [-c DIR] passwd list``         print the users, one a line

The file is ``smtpd_sasl_password_file`` (default
``$config_directory/sasl_passwd``), read by smtpd when
``smtpd_sasl_type = passwd-file``; its format and permissions are described
in :mod:`postpy.sasl.passwdfile`.  The password is never taken from the
command line (other users could read it in ``ps``): ``add`` prompts twice
on a terminal, or reads the first line of standard input otherwise
(``printf '%s\\n' "$pw" | postpy passwd add alice``).  As root a new file
is created ``0640`` with the group of ``mail_owner`` so that smtpd can read
it after dropping privileges.  Changes take effect at the next AUTH; no
reload is needed.

Exit status: 0 on success, ``EX_USAGE`` for a bad name or password,
``EX_NOUSER`` for deleting an unknown user, ``EX_CONFIG`` when the
configuration or the file cannot be used, ``EX_CANTCREAT`` when the file
cannot be written.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from typing import NoReturn

import click

from postpy.config.maincf import Config, ConfigError, load_config
from postpy.sasl import passwdfile
from postpy.util import privs
from postpy.util.sysexits import EX_CANTCREAT, EX_CONFIG, EX_NOUSER, EX_USAGE

PROG = "postpy passwd"


def _fail(text: str, status: int) -> NoReturn:
    click.echo(f"{PROG}: fatal: {text}", err=True)
    sys.exit(status)


def _config(ctx: click.Context) -> Config:
    try:
        return load_config(ctx.obj["config_dir"])
    except ConfigError as exc:
        _fail(str(exc), EX_CONFIG)


def _path(cfg: Config) -> str:
    path = cfg.get("smtpd_sasl_password_file").strip()
    if not path:
        _fail("smtpd_sasl_password_file is empty", EX_CONFIG)
    return path


def read_new_password() -> str:
    """Prompt twice on a terminal; otherwise the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Retype new password: ") != first:
            _fail("the passwords do not match", EX_USAGE)
        password = first
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        _fail("empty password", EX_USAGE)
    if "\x00" in password:
        _fail("the password contains a NUL character", EX_USAGE)
    return password


def _group_for_new_file(cfg: Config) -> int | None:
    """As root, the mail_owner's group, so smtpd can read the file."""
    if os.geteuid() != 0:
        return None
    try:
        return privs.lookup_user(cfg.get("mail_owner")).gid
    except privs.PrivilegeError as exc:
        click.echo(f"{PROG}: warning: {exc}: the file will be readable by root only", err=True)
        return None


def _update(cfg: Config, change: Callable[[dict[str, str]], object]) -> None:
    path = _path(cfg)
    try:
        passwdfile.update_file(path, change, new_gid=_group_for_new_file(cfg))
    except passwdfile.PasswdFileError as exc:
        _fail(str(exc), EX_CONFIG)
    except OSError as exc:
        _fail(f"cannot update {path}: {exc.strerror or exc}", EX_CANTCREAT)


@click.group()
def passwd() -> None:
    """Manage SMTP AUTH users (smtpd_sasl_password_file)."""


@passwd.command()
@click.argument("user")
@click.pass_context
def add(ctx: click.Context, user: str) -> None:
    """Add USER or change USER's password (password from stdin or a prompt)."""
    problem = passwdfile.username_problem(user)
    if problem:
        _fail(problem, EX_USAGE)
    cfg = _config(ctx)
    encoded = passwdfile.hash_password(read_new_password())
    existed: list[bool] = []

    def change(entries: dict[str, str]) -> None:
        existed.append(user in entries)
        entries[user] = encoded

    _update(cfg, change)
    click.echo(f"{PROG}: {'changed the password of' if existed[0] else 'added'} user {user}",
               err=True)


@passwd.command()
@click.argument("user")
@click.pass_context
def delete(ctx: click.Context, user: str) -> None:
    """Remove USER."""
    cfg = _config(ctx)
    path = _path(cfg)
    try:
        known = user in passwdfile.read_file(path).entries if os.path.exists(path) else False
    except passwdfile.PasswdFileError as exc:
        _fail(str(exc), EX_CONFIG)
    if not known:
        _fail(f"no such user: {user}", EX_NOUSER)
    _update(cfg, lambda entries: entries.pop(user, None))
    click.echo(f"{PROG}: deleted user {user}", err=True)


@passwd.command("list")
@click.pass_context
def list_users(ctx: click.Context) -> None:
    """Print the users, one a line."""
    cfg = _config(ctx)
    path = _path(cfg)
    if not os.path.exists(path):
        return
    try:
        loaded = passwdfile.read_file(path)
    except passwdfile.PasswdFileError as exc:
        _fail(str(exc), EX_CONFIG)
    for text in loaded.warnings:
        click.echo(f"{PROG}: warning: {text}", err=True)
    for user in loaded.entries:
        click.echo(user)
