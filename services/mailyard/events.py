"""Delivery events as protobuf: what is published to the events exchange — no I/O.

The routing key is the event kind (``EventKind``). The kinds that become
DSNs (``BOUNCE_EVENTS``) carry what a DSN needs: the original headers, the
sender's DSN requests (RFC 3461: RET, ENVID, NOTIFY, ORCPT) and, for a
failure of a message sent with ``RET=FULL``, the message itself (§4.3:
FULL asks for the whole message in a *failed* DSN only; ``suppressed``
recipients get a failed DSN too). The other kinds
carry no body at all: ``delivered`` is the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailyard import wire
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind
from mailyard.config import TRANSACTIONAL
from mailyard.content import header_block
from mailyard.v1 import message_pb2 as pb

KIND_CODES = {
    EventKind.DELIVERED: pb.EVENT_KIND_DELIVERED,
    EventKind.DEFERRED: pb.EVENT_KIND_DEFERRED,
    EventKind.FAILED: pb.EVENT_KIND_FAILED,
    EventKind.EXPIRED: pb.EVENT_KIND_EXPIRED,
    EventKind.BOUNCED: pb.EVENT_KIND_BOUNCED,
    EventKind.COMPLAINED: pb.EVENT_KIND_COMPLAINED,
    EventKind.DELAYED: pb.EVENT_KIND_DELAYED,
    EventKind.RELAYED: pb.EVENT_KIND_RELAYED,
    EventKind.SUPPRESSED: pb.EVENT_KIND_SUPPRESSED,
}
# The events whose DSN says "failed", which RET=FULL asks the whole message for
# (a suppressed recipient's DSN is a failed one too).
FAILURE_EVENTS = (EventKind.FAILED, EventKind.EXPIRED, EventKind.SUPPRESSED)


@dataclass(frozen=True, slots=True)
class Quoting:
    """How much of the original a DSN may quote (``bounce.max_quoted_*``)."""

    headers: int = 65536  # the header section is cut at this size (never mid-line)
    message: int = 10 * 1024 * 1024  # RET=FULL: a larger message is quoted by its headers


def event_for(
    kind: EventKind,
    job: pb.DeliveryJob,
    results: Sequence[pb.RecipientResult],
    *,
    now: datetime,
    attempts: int | None = None,
    quoting: Quoting = Quoting(),  # frozen: one shared default is safe
) -> pb.DeliveryEvent:
    event = pb.DeliveryEvent(
        kind=KIND_CODES[kind],
        message_id=job.message_id,
        queue_id=job.queue_id,
        domain=job.domain,
        mail_from=job.mail_from,
        results=results,
        received_at=job.received_at,
        occurred_at=wire.timestamp(now),
        attempts=job.attempts if attempts is None else attempts,
        origin=job.origin,
        mail_class=job.mail_class or TRANSACTIONAL,
    )
    if kind not in BOUNCE_EVENTS:
        return event  # only a DSN needs more; the other events stay small
    event.original_headers = header_block(job.content, quoting.headers)
    _add_requests(event, job)
    if kind in FAILURE_EVENTS and job.options.ret == "FULL" and len(job.content) <= quoting.message:
        event.original_content = job.content
    if kind is EventKind.DELAYED:
        event.expires_at.CopyFrom(job.expires_at)
    return event


def _add_requests(event: pb.DeliveryEvent, job: pb.DeliveryJob) -> None:
    """The job's DSN requests, the recipients' in the order of the event's results."""
    if job.HasField("options"):
        event.options.CopyFrom(job.options)
    if len(job.recipient_options) != len(job.recipients):
        return  # none (or not one per recipient: the defaults apply)
    by_recipient = dict(zip(job.recipients, job.recipient_options, strict=True))
    requests = [by_recipient.get(r.recipient, pb.RecipientOptions()) for r in event.results]
    if any(r.notify or r.orcpt for r in requests):
        event.recipient_options.extend(requests)
