"""bounce: the words of a notice (subjects and the human-readable part).

Every sentence a person reads in a delivery status notification lives in
this module, so the wording can be reviewed, changed or translated in one
place; :mod:`postpy.bounce.dsn` only assembles the parts.  The texts follow
the structure of Postfix's built-in bounce templates (who is writing, what
happened, what to do about it, then one line per recipient with the
reason) in our own words.  No I/O.

Kinds of notice:

``failure``   delivery failed permanently or the message expired
``delay``     still not delivered after ``delay_warning_time``
``success``   delivered, and the sender asked to hear it (NOTIFY=SUCCESS)
``postmaster``  a failure notice about a message with the null sender (a
              notice that could not be delivered), sent to
              ``2bounce_notice_recipient`` instead of a sender
"""

from __future__ import annotations

FAILURE, DELAY, SUCCESS, POSTMASTER = "failure", "delay", "success", "postmaster"

SUBJECTS = {
    FAILURE: "Undelivered Mail Returned to Sender",
    DELAY: "Delayed Mail (still being retried)",
    SUCCESS: "Successful Mail Delivery Report",
    POSTMASTER: "Postmaster Copy: Undelivered Mail",
}

# Content-Description of the returned message part, by kind and by whether
# the whole message or only its header is attached.
RETURNED_DESCRIPTION = {
    (FAILURE, True): "Undelivered Message",
    (FAILURE, False): "Undelivered Message Headers",
    (POSTMASTER, True): "Undelivered Message",
    (POSTMASTER, False): "Undelivered Message Headers",
    (DELAY, True): "Delayed Message",
    (DELAY, False): "Delayed Message Headers",
    (SUCCESS, True): "Delivered Message",
    (SUCCESS, False): "Delivered Message Headers",
}

_INTRO = "This is the mail delivery system at host {host}.\n\n"

_FAILURE = """\
Your message could not be delivered to one or more of its recipients,
and this system has stopped trying. The reason for each recipient is
given below. {returned}

If you need help with this, forward this notice to your postmaster.
Please keep the delivery report that follows; you may leave out the
returned message.
"""

_DELAY = """\
This is a warning only: you do not need to send your message again.

Your message has not yet been delivered to the recipients listed
below. It has been waiting for {age}, and this system will go on
trying until {until}. If it still cannot be delivered by then, it
will be returned to you with another notice.
"""

_SUCCESS = """\
Your message was delivered to the recipients listed below, as the
delivery notification request that came with it asked.

Delivery to a mailbox ends the message's journey: expect no further
notices about it. A message passed on to another system that does not
support delivery notifications may still produce notices from there.
"""

_POSTMASTER = """\
A message with the null sender (usually a delivery status notice)
could not be delivered. Such a message cannot be returned to its
sender, so it comes to you, the postmaster, instead. The reason for
each recipient is given below. {returned}
"""

_RETURNED = {
    True: "A copy of the message is attached.",
    False: "The headers of the message are attached.",
}

_SIGNATURE = "\n{indent}The {mail_name} mail system\n"


def describe_age(seconds: float) -> str:
    """``3 days``, ``1 hour``, ``45 minutes``: the largest whole unit."""
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def recipient_line(address: str, orig: str, reason: str) -> str:
    """``<bob@example.net> (expanded from <bob>): reason``, one per recipient."""
    expanded = f" (expanded from <{orig}>)" if orig else ""
    return f"<{address}>{expanded}: {reason}\n"


def human_text(kind: str, *, host: str, mail_name: str, whole_message: bool,
               age: float = 0.0, until: str = "", lines: list[str] | None = None) -> str:
    """The text/plain part: the explanation, a signature, then ``lines``."""
    returned = _RETURNED[whole_message]
    if kind == FAILURE:
        body = _FAILURE.format(returned=returned)
    elif kind == POSTMASTER:
        body = _POSTMASTER.format(returned=returned)
    elif kind == DELAY:
        body = _DELAY.format(age=describe_age(age), until=until)
    elif kind == SUCCESS:
        body = _SUCCESS
    else:
        raise ValueError(f"unknown notice kind {kind!r}")
    text = _INTRO.format(host=host) + body + _SIGNATURE.format(indent=" " * 19, mail_name=mail_name)
    if lines:
        text += "\n" + "\n".join(line.rstrip("\n") for line in lines) + "\n"
    return text
