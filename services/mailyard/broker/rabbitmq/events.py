"""Events on the ``<prefix>.events`` topic exchange; the routing key is the kind.

``failed`` and ``expired`` must reach the bounce queue (a DSN depends on
them): a return is an error. ``delivered`` and ``deferred`` are for whoever
subscribes (dashboards, webhooks) and may have no queue bound: a return only
means nobody listens yet, and that kind is then not published for
``recheck`` seconds, after which it is tried again. With nothing listening,
this saves a publish per message; a new subscriber sees events within
``recheck`` seconds of binding.
"""

from __future__ import annotations

import time

from mailyard import wire
from mailyard.broker.metrics import UNSUBSCRIBED
from mailyard.broker.port import Unroutable
from mailyard.broker.rabbitmq.amqp import amqp_message
from mailyard.broker.rabbitmq.client import BrokerClient
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind
from mailyard.v1 import message_pb2 as pb


class EventPublisher:
    def __init__(self, client: BrokerClient, *, recheck: float = 30.0) -> None:
        self.client = client
        self.recheck = recheck
        self._unrouted_until: dict[EventKind, float] = {}

    def hears(self, kind: EventKind) -> bool:
        """False while an optional kind is paused for having had no queue bound."""
        return kind in BOUNCE_EVENTS or time.monotonic() >= self._unrouted_until.get(kind, 0.0)

    async def publish(self, kind: EventKind, event: pb.DeliveryEvent) -> None:
        if not self.hears(kind):
            return
        optional = kind not in BOUNCE_EVENTS
        try:
            await self.client.publish(
                kind.value,
                amqp_message(wire.encode_event(event, kind.value)),
                exchange=self.client.topology.events,
                may_be_unroutable=optional,
            )
        except Unroutable:
            if not optional:
                raise
            self._unrouted_until[kind] = time.monotonic() + self.recheck
            UNSUBSCRIBED.labels(self.client.service, kind.value).inc()
