"""Leaving suppressed recipients out of a message's jobs — a pure decision.

Done where the queue service splits an accepted message into jobs
(``plan.plan_accepted``), against the suppression list as this replica holds
it at that moment. Each recipient of a remote job is looked up once (a dict
lookup; nothing at all while the list is empty). A suppressed recipient is
taken out of its job, and the recipients taken out of one job become one
``suppressed`` event, which reaches the bounce service: its DSN says since
when and why (``550 5.7.1``, the entry's class in the text), unless the
client asked for no failure notice. A job left without recipients is not
published.

The scope of an entry is matched against the envelope sender's domain (MAIL
FROM, lower case), not the From: header: the envelope is what the sender's
system controls and what bounces go back to, and reading a header would
cost a parse per message. Mail for ``ingress.local_domains`` is never
suppressed: it does not leave.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from mailyard.broker import EventKind
from mailyard.events import event_for
from mailyard.suppression.entries import Entry, rfc3339, sender_domain
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

SUPPRESSED_CODE, SUPPRESSED_STATUS = 550, "5.7.1"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """One job's recipients that were not sent to, as an event, and why."""

    event: pb.DeliveryEvent
    entries: tuple[Entry, ...]  # in the order of event.results


def take_suppressed(
    jobs: Sequence[pb.DeliveryJob],
    suppressions: SuppressionState,
    *,
    now: datetime,
    quote_limit: int,
) -> tuple[list[pb.DeliveryJob], list[Suppressed]]:
    """(the jobs to publish, without suppressed recipients; what was taken out).

    ``jobs`` are the split's own, fresh: a job losing some recipients is
    changed in place (its content is not copied).
    """
    if not suppressions or not jobs:
        return list(jobs), []
    kept: list[pb.DeliveryJob] = []
    taken: list[Suppressed] = []
    for job in jobs:
        domain = sender_domain(job.mail_from)
        hits: dict[int, Entry] = {}
        for index, recipient in enumerate(job.recipients):
            entry = suppressions.lookup(recipient, domain, now)
            if entry is not None:
                hits[index] = entry
        if not hits:
            kept.append(job)
            continue
        results = [
            pb.RecipientResult(
                recipient=job.recipients[index],
                reply=pb.SmtpReply(
                    code=SUPPRESSED_CODE, status=SUPPRESSED_STATUS, text=explain(entry)
                ),
                bounce_class=entry.bounce_class or "",
            )
            for index, entry in hits.items()
        ]
        # Made from the whole job, so the event carries these recipients' options.
        event = event_for(EventKind.SUPPRESSED, job, results, now=now, quote_limit=quote_limit)
        taken.append(Suppressed(event, tuple(hits.values())))
        if len(hits) < len(job.recipients):
            _leave_out(job, hits.keys())
            kept.append(job)
    return kept, taken


def explain(entry: Entry) -> str:
    """``suppressed since 2025-06-01T10:00:00Z (bounce, class InvalidRecipient): 550 5.1.1 …``"""
    why = entry.source.value
    if entry.bounce_class:
        why += f", class {entry.bounce_class}"
    if entry.scope:
        why += f", for mail from {entry.scope}"
    text = f"suppressed since {rfc3339(entry.since)} ({why})"
    return f"{text}: {entry.reason}" if entry.reason else text


def _leave_out(job: pb.DeliveryJob, indexes: Collection[int]) -> None:
    recipients = [r for i, r in enumerate(job.recipients) if i not in indexes]
    del job.recipients[:]
    job.recipients.extend(recipients)
    if job.recipient_options:
        kept = []
        for index, option in enumerate(job.recipient_options):
            if index not in indexes:
                copy = pb.RecipientOptions()
                copy.CopyFrom(option)
                kept.append(copy)
        del job.recipient_options[:]
        job.recipient_options.extend(kept)
