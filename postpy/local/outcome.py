"""local: delivery results as data.

Every step of local delivery that can fail raises :class:`DeliveryError`
carrying an RFC 3463 status (``X.Y.Z``) and a text; the class digit decides
the verdict (4: try again later, 5: give up).  :mod:`postpy.local.deliver`
is the one place that turns errors into :class:`Outcome` values, logs them,
and folds the outcomes of one requested recipient into the single
:class:`postpy.ipc.messages.RecipientResult` that qmgr receives.

Mapping of system errors (:func:`os_error_dsn`), chosen after Postfix's
mailbox code: a busy lock or a stale NFS handle is ``4.2.0``, a full disk
``4.3.0``, a user quota ``4.2.2`` (temporary: the user may clean up), a
file that grew past its size limit ``5.2.2`` (mailbox full); anything else
takes the caller's default, which is temporary for the user's own mailbox
(an administrator can fix permissions before the mail expires) and
permanent for ``/file`` destinations named in aliases or ``.forward``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"


class DeliveryError(Exception):
    """One destination could not be delivered to; ``dsn`` says how badly."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(f"{dsn} {text}")
        self.dsn = dsn
        self.text = text

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")

    def prefixed(self, prefix: str) -> DeliveryError:
        """The same error with context in front of the text."""
        return DeliveryError(self.dsn, f"{prefix}{self.text}")


@dataclass(frozen=True)
class Outcome:
    status: str         # sent | deferred | bounced
    dsn: str
    text: str

    @classmethod
    def sent(cls, text: str) -> Outcome:
        return cls(SENT, "2.0.0", text)

    @classmethod
    def failed(cls, error: DeliveryError) -> Outcome:
        return cls(DEFERRED if error.temporary else BOUNCED, error.dsn, error.text)


_TEMPORARY = {
    errno.EAGAIN: "4.2.0",
    errno.EWOULDBLOCK: "4.2.0",
    errno.ESTALE: "4.2.0",
    errno.ENOSPC: "4.3.0",
    errno.EDQUOT: "4.2.2",
    errno.EFBIG: "5.2.2",
}


def os_error_dsn(exc: OSError, default: str) -> str:
    """The status for a system error (see the module docstring)."""
    return _TEMPORARY.get(exc.errno or 0, default)


def os_error_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def combine(outcomes: list[Outcome]) -> Outcome:
    """One verdict for a recipient that fanned out to several destinations.

    All sent: sent.  Any deferred: deferred (the recipient is retried as a
    whole; see :mod:`postpy.local.deliver` for how double delivery is kept
    down).  Otherwise any bounced: bounced.  The reason is the first one of
    the deciding kind.
    """
    if not outcomes:
        return Outcome.sent("alias expanded to no destinations")
    for status in (DEFERRED, BOUNCED):
        for outcome in outcomes:
            if outcome.status == status:
                return outcome
    if len(outcomes) == 1:
        return outcomes[0]
    return Outcome.sent(f"delivered to {len(outcomes)} destinations")
