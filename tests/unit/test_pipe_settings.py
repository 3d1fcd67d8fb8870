"""pipe(8) service attributes from master.cf (postpy.pipe.settings): good and malformed."""

from __future__ import annotations

import os
import pwd

import pytest

from postpy.config.maincf import ConfigError
from postpy.pipe.settings import NULL_SENDER, parse

NOBODY = pwd.getpwnam("nobody")


def test_full_entry() -> None:
    s = parse(["flags=DRhu.", "user=nobody:nogroup", "size=1000", "eol=\\r\\n", "null_sender=",
               "directory=/tmp", "argv=/usr/bin/spamc", "-e", "/usr/sbin/sendmail", "-oi",
               "-f", "${sender}", "${recipient}"], "postpy")
    assert s.argv == ("/usr/bin/spamc", "-e", "/usr/sbin/sendmail", "-oi", "-f", "${sender}", "${recipient}")
    assert s.flags == frozenset("DRhu.")
    assert (s.user.name, s.user.uid) == ("nobody", NOBODY.pw_uid)
    assert (s.size_limit, s.eol, s.null_sender, s.directory) == (1000, b"\r\n", "", "/tmp")


def test_defaults() -> None:
    s = parse(["user=nobody", "argv=/bin/cat"], "postpy")
    assert (s.flags, s.size_limit, s.eol, s.null_sender, s.directory) == (frozenset(), 0, b"\n", NULL_SENDER, "/")
    assert s.user.gid == NOBODY.pw_gid
    assert parse(["user=nobody", "argv=", "/bin/cat", "x"], "postpy").argv == ("/bin/cat", "x")


@pytest.mark.parametrize("args, message", [
    (["flags=RZq", "user=nobody", "argv=/bin/cat"], 'unknown flag "Z"'),
    (["user=nobody"], "missing argv="),
    (["user=nobody", "argv="], "missing argv="),
    (["argv=/bin/cat"], "missing user="),
    (["user=nobody", "argv=cat"], "must be an absolute path"),
    (["user=root", "argv=/bin/cat"], "root privileges"),
    (["user=0", "argv=/bin/cat"], "root privileges"),
    (["user=nobody:root", "argv=/bin/cat"], "root group"),
    (["user=no-such-user-here", "argv=/bin/cat"], "unknown user"),
    (["user=nobody:no-such-group", "argv=/bin/cat"], "unknown group"),
    (["user=", "argv=/bin/cat"], "no user name"),
    (["user=nobody", "size=10k", "argv=/bin/cat"], "size=10k"),
    (["user=nobody", "eol=\\x", "argv=/bin/cat"], "unknown escape"),
    (["user=nobody", "directory=tmp", "argv=/bin/cat"], "absolute path"),
    (["user=nobody", "colour=blue", "argv=/bin/cat"], 'unknown attribute "colour="'),
    (["user=nobody", "stray", "argv=/bin/cat"], 'bad attribute "stray"'),
    (["user=nobody", "argv=/bin/echo", "${nosuch}"], "unknown macro ${nosuch}"),
    (["user=nobody", "argv=/bin/echo", "${recipient"], "bad macro syntax"),
    (["user=nobody", "argv=/bin/echo", "cost $"], "bad macro syntax"),
])
def test_malformed(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse(args, "postpy")
    assert message in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="mail_owner is refused only when running as root")
def test_mail_owner_refused() -> None:
    with pytest.raises(ConfigError, match="mail system owner"):
        parse(["user=nobody", "argv=/bin/cat"], "nobody")
