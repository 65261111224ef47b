"""Delivery events as protobuf: what is published to the events exchange — no I/O.

The routing key is the event kind (``EventKind``); the kinds a DSN depends
on (``failed``, ``expired``, ``suppressed``) carry the original headers,
which a DSN quotes, and each recipient's options (NOTIFY, ORCPT); the other
kinds carry no body at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailyard import wire
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind
from mailyard.content import header_block
from mailyard.v1 import message_pb2 as pb

KIND_CODES = {
    EventKind.DELIVERED: pb.EVENT_KIND_DELIVERED,
    EventKind.DEFERRED: pb.EVENT_KIND_DEFERRED,
    EventKind.FAILED: pb.EVENT_KIND_FAILED,
    EventKind.EXPIRED: pb.EVENT_KIND_EXPIRED,
    EventKind.BOUNCED: pb.EVENT_KIND_BOUNCED,
    EventKind.COMPLAINED: pb.EVENT_KIND_COMPLAINED,
    EventKind.SUPPRESSED: pb.EVENT_KIND_SUPPRESSED,
}


def event_for(
    kind: EventKind,
    job: pb.DeliveryJob,
    results: Sequence[pb.RecipientResult],
    *,
    now: datetime,
    attempts: int | None = None,
    quote_limit: int = 65536,
) -> pb.DeliveryEvent:
    for_dsn = kind in BOUNCE_EVENTS
    return pb.DeliveryEvent(
        kind=KIND_CODES[kind],
        message_id=job.message_id,
        queue_id=job.queue_id,
        domain=job.domain,
        mail_from=job.mail_from,
        results=results,
        received_at=job.received_at,
        occurred_at=wire.timestamp(now),
        attempts=job.attempts if attempts is None else attempts,
        # Only a DSN needs the headers; other events stay small.
        original_headers=header_block(job.content, quote_limit) if for_dsn else b"",
        origin=job.origin,
        recipient_options=_options_of(job, results) if for_dsn else (),
    )


def _options_of(
    job: pb.DeliveryJob, results: Sequence[pb.RecipientResult]
) -> list[pb.RecipientOptions]:
    """The job's options of each result's recipient, in the results' order."""
    if not job.recipient_options or len(job.recipient_options) != len(job.recipients):
        return []
    by_recipient = dict(zip(job.recipients, job.recipient_options, strict=True))
    none = pb.RecipientOptions()
    return [by_recipient.get(r.recipient, none) for r in results]
