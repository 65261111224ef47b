"""Delivery events on the ``<prefix>.events`` topic exchange.

The routing key is the event kind. ``failed`` and ``expired`` are published
``mandatory``: a DSN depends on them reaching the bounce queue. The others are
for whoever subscribes (dashboards, webhooks) and may have no queue bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailyard import wire
from mailyard.broker import BOUNCE_EVENTS, BrokerClient, EventKind
from mailyard.content import header_block
from mailyard.v1 import message_pb2 as pb

_KINDS = {
    EventKind.DELIVERED: pb.EVENT_KIND_DELIVERED,
    EventKind.DEFERRED: pb.EVENT_KIND_DEFERRED,
    EventKind.FAILED: pb.EVENT_KIND_FAILED,
    EventKind.EXPIRED: pb.EVENT_KIND_EXPIRED,
}


def event_for(
    kind: EventKind,
    job: pb.DeliveryJob,
    results: Sequence[pb.RecipientResult],
    *,
    now: datetime,
    quote_limit: int = 65536,
) -> pb.DeliveryEvent:
    return pb.DeliveryEvent(
        kind=_KINDS[kind],
        message_id=job.message_id,
        queue_id=job.queue_id,
        domain=job.domain,
        mail_from=job.mail_from,
        results=results,
        received_at=job.received_at,
        occurred_at=wire.timestamp(now),
        attempts=job.attempts,
        # Only a DSN needs the headers; other events stay small.
        original_headers=header_block(job.content, quote_limit) if kind in BOUNCE_EVENTS else b"",
        origin=job.origin,
    )


async def publish_event(client: BrokerClient, kind: EventKind, event: pb.DeliveryEvent) -> None:
    await client.publish(
        kind.value,
        wire.encode(
            event,
            message_id=f"{event.queue_id}/{event.attempts}/{kind.value}",
            trace_id=event.message_id,
            queue_id=event.queue_id,
        ),
        exchange=client.topology.events,
        mandatory=kind in BOUNCE_EVENTS,
    )
