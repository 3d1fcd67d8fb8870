"""local: deliver to ``/file`` destinations from aliases, ``.forward`` and includes.

The message is appended in mbox form (:func:`postpy.local.message.mbox_form`)
with the same locking and all-or-nothing write as a mailbox
(:func:`postpy.local.mailbox.append`), acting as the identity the
destination belongs to (:mod:`postpy.local.resolve`): the file is opened by
that user, so the kernel refuses a file they may not write; a symlink is
refused (``O_NOFOLLOW``), and so is anything but a regular file with one
link.  A missing file is created with mode 0600.  The dotlock is best
effort here (the file's directory need not be writable).  Errors without a
more specific status are permanent (``5.2.0``): the destination was named by
a person, not set up by the system.

``/dev/null`` is accepted and discards the message, as every MTA does.
"""

from __future__ import annotations

from postpy.local import mailbox
from postpy.local.outcome import DeliveryError
from postpy.local.privileges import Identity

DEV_NULL = "/dev/null"


def deliver(path: str, data: bytes, who: Identity, *, attempts: int, delay: float,
            stale_after: float, size_limit: int) -> None:
    """Append ``data`` to ``path`` as ``who`` (raises DeliveryError)."""
    if path == DEV_NULL:
        return
    policy = mailbox.MboxPolicy(attempts=attempts, delay=delay, stale_after=stale_after,
                                size_limit=size_limit, fail_dsn="5.2.0", root_fallback=False,
                                dotlock_required=False)
    try:
        mailbox.append(path, data, who, policy)
    except DeliveryError as exc:
        raise exc.prefixed(f"cannot append message to file {path}: ") from None
