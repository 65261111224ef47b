"""What becomes of suppressed recipients: a ``suppressed`` event each job — pure.

The check itself is in the split (``split.py``), against the suppression
list as this replica holds it when the message is planned: one dict lookup
per remote recipient, nothing at all while the list is empty. The
recipients it holds back from one job become one ``suppressed`` event,
which reaches the bounce service: its DSN says since when and why
(``550 5.7.1``, the entry's class in the text), unless the client asked
for no failure notice. A job left without recipients is not published.

The scope of an entry is matched against the envelope sender's domain (MAIL
FROM, lower case), not the From: header: the envelope is what the sender's
system controls and what bounces go back to, and reading a header would
cost a parse per message. Mail for ``ingress.local_domains`` is never
suppressed: it does not leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailyard.broker import EventKind
from mailyard.events import Quoting, event_for
from mailyard.queue.split import Held
from mailyard.suppression.entries import Entry, rfc3339
from mailyard.v1 import message_pb2 as pb

SUPPRESSED_CODE, SUPPRESSED_STATUS = 550, "5.7.1"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """One job's recipients that were not sent to, as an event, and why."""

    event: pb.DeliveryEvent
    entries: tuple[Entry, ...]  # in the order of event.results


def suppressed_events(held: Sequence[Held], *, now: datetime, quoting: Quoting) -> list[Suppressed]:
    return [
        Suppressed(
            event_for(
                EventKind.SUPPRESSED,
                one.job,
                [
                    pb.RecipientResult(
                        recipient=recipient,
                        reply=pb.SmtpReply(
                            code=SUPPRESSED_CODE, status=SUPPRESSED_STATUS, text=explain(entry)
                        ),
                        bounce_class=entry.bounce_class or "",
                    )
                    for recipient, entry in zip(one.job.recipients, one.entries, strict=True)
                ],
                now=now,
                quoting=quoting,
            ),
            one.entries,
        )
        for one in held
    ]


def explain(entry: Entry) -> str:
    """``suppressed since 2025-06-01T10:00:00Z (bounce, class InvalidRecipient): 550 5.1.1 …``"""
    why = entry.source.value
    if entry.bounce_class:
        why += f", class {entry.bounce_class}"
    if entry.scope:
        why += f", for mail from {entry.scope}"
    text = f"suppressed since {rfc3339(entry.since)} ({why})"
    return f"{text}: {entry.reason}" if entry.reason else text
