"""Delivery events on the ``<prefix>.events`` topic exchange.

The routing key is the event kind. ``failed`` and ``expired`` must reach the
bounce queue: a DSN depends on them. The others are for whoever subscribes
(dashboards, webhooks) and may have no queue bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter

from mailyard import wire
from mailyard.broker import BOUNCE_EVENTS, BrokerClient, EventKind, Unroutable
from mailyard.content import header_block
from mailyard.v1 import message_pb2 as pb

UNSUBSCRIBED = Counter(
    "mailyard_events_unsubscribed_total",
    "Times an optional event kind was found with no queue bound, and paused",
    ["service", "kind"],
)

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
    attempts: int | None = None,
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
        attempts=job.attempts if attempts is None else attempts,
        # Only a DSN needs the headers; other events stay small.
        original_headers=header_block(job.content, quote_limit) if kind in BOUNCE_EVENTS else b"",
        origin=job.origin,
    )


class EventPublisher:
    """Publishes delivery events, and stops sending kinds that nobody subscribed to.

    ``failed`` and ``expired`` always go out (the bounce queue is bound to
    them; a return is an error). ``delivered`` and ``deferred`` go out
    ``mandatory`` too, but a return only means no queue is bound yet: that
    kind is then not published for ``recheck`` seconds, after which it is
    tried again. With nothing listening, this saves a publish per message;
    a new subscriber sees events within ``recheck`` seconds of binding.
    """

    def __init__(self, client: BrokerClient, *, recheck: float = 30.0) -> None:
        self.client = client
        self.recheck = recheck
        self._unrouted_until: dict[EventKind, float] = {}

    async def publish(self, kind: EventKind, event: pb.DeliveryEvent) -> None:
        optional = kind not in BOUNCE_EVENTS
        if optional and time.monotonic() < self._unrouted_until.get(kind, 0.0):
            return
        message = wire.encode(
            event,
            message_id=f"{event.queue_id}/{event.attempts}/{kind.value}",
            trace_id=event.message_id,
            queue_id=event.queue_id,
        )
        try:
            await self.client.publish(
                kind.value,
                message,
                exchange=self.client.topology.events,
                may_be_unroutable=optional,
            )
        except Unroutable:
            if not optional:
                raise
            self._unrouted_until[kind] = time.monotonic() + self.recheck
            UNSUBSCRIBED.labels(self.client.service, kind.value).inc()
