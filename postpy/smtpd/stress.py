"""When an smtpd process is under stress, and what a session then gets.

Postfix's master runs smtpd with ``stress=yes`` when a service reaches its
process limit, and main.cf defaults such as ``smtpd_timeout =
${stress?10}${stress:300}s`` then give short time and error limits, so
idle or misbehaving clients cannot hold every session while normal senders
wait.  postpy's smtpd serves many sessions per process, so here the
process decides for itself:

**stress is on while the process serves at least
``smtpd_busy_session_count`` sessions** (default 100), counting the new
one -- the count at which it also reports itself busy to master, which
then starts another smtpd process if ``maxproc`` allows.  A session that
*begins* under stress reads ``smtpd_timeout`` and
``smtpd_hard_error_limit`` with ``stress = yes`` (by default 10 s and 1
error instead of 300 s and 20) for its whole life; sessions already open
keep what they started with.  Entering and leaving stress are logged.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from postpy.util import maillog

if TYPE_CHECKING:
    from postpy.smtpd.settings import Settings


@dataclasses.dataclass
class Load:
    """The sessions of this process (one per process, kept in Settings)."""

    threshold: int = 100
    sessions: int = 0
    stressed: bool = False

    def begin(self) -> bool:
        """A session starts: is the process under stress now?"""
        self.sessions += 1
        self._update()
        return self.stressed

    def end(self) -> None:
        self.sessions = max(0, self.sessions - 1)
        self._update()

    def _update(self) -> None:
        now = self.sessions >= self.threshold
        if now != self.stressed:
            self.stressed = now
            if now:
                maillog.info(f"stress: {self.sessions} sessions (smtpd_busy_session_count = "
                             f"{self.threshold}): new sessions get the stress limits")
            else:
                maillog.info(f"stress over: {self.sessions} sessions")


def session_settings(settings: Settings, stressed: bool) -> Settings:
    """The settings one session runs with: under stress, the stress limits."""
    if not stressed:
        return settings
    return dataclasses.replace(settings, timeout=settings.stress_timeout,
                               hard_error_limit=settings.stress_hard_error_limit)
