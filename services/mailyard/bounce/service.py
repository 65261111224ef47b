"""The bounce service: DSNs for failed and expired recipients; mail for local domains."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from mailyard import ids, wire
from mailyard.bounce import metrics
from mailyard.bounce.dsn import build_dsn
from mailyard.broker import Consumer, Delivery, QueueConsumer, Topology
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

_KIND_NAMES = {pb.EVENT_KIND_FAILED: "failed", pb.EVENT_KIND_EXPIRED: "expired"}


class BounceService(ConsumingService):
    name = "bounce"

    def __init__(self, settings: Settings, topology: Topology) -> None:
        super().__init__(settings.broker, topology)
        self.settings = settings

    def consumers(self) -> list[QueueConsumer[Any]]:
        topology, prefetch = self.broker.topology, self.settings.bounce.prefetch
        return [
            Consumer(
                self.broker, topology.bounce, pb.DeliveryEvent, self.on_event, prefetch=prefetch
            ),
            Consumer(self.broker, topology.local, pb.DeliveryJob, self.on_local, prefetch=prefetch),
        ]

    async def on_event(self, delivery: Delivery[pb.DeliveryEvent]) -> None:
        event = delivery.payload
        kind = _KIND_NAMES.get(event.kind)
        if kind is None:
            return  # only failed/expired are bound to our queue; anything else is not ours
        if not event.mail_from:
            # RFC 3461 §6.2 / RFC 5321 §4.5.5: never a notification to <>,
            # which is what stops bounce loops.
            metrics.DSNS_SKIPPED.labels("null_sender").inc()
            log.info(
                "no DSN for the null sender",
                extra={"message_id": event.message_id, "queue_id": event.queue_id},
            )
            return
        now = datetime.now(UTC)
        dsn_id = ids.new_message_id()
        content = build_dsn(event, reporting_mta=self.settings.hostname, dsn_id=dsn_id, now=now)
        notice = pb.AcceptedMessage(
            message_id=dsn_id,
            mail_from="",
            recipients=[event.mail_from],
            content=content,
            received_at=wire.timestamp(now),
            client=pb.Client(address="", helo=self.settings.hostname),
            origin=pb.ORIGIN_DSN,
        )
        await self.broker.publish(
            self.broker.topology.inbound,
            wire.encode(notice, message_id=dsn_id, trace_id=dsn_id),
        )
        metrics.DSNS.labels(kind).inc()
        metrics.DSN_RECIPIENTS.labels(kind).inc(len(event.results))
        log.info(
            "DSN queued",
            extra={
                "message_id": event.message_id,
                "queue_id": event.queue_id,
                "dsn_id": dsn_id,
                "to": event.mail_from,
                "kind": kind,
                "recipients": len(event.results),
            },
        )

    async def on_local(self, delivery: Delivery[pb.DeliveryJob]) -> None:
        job = delivery.payload
        # Parsing asynchronous bounces and complaints comes later; for now
        # the message is counted, logged and kept from ever being relayed.
        metrics.LOCAL_MESSAGES.inc()
        log.info(
            "received for a local domain",
            extra={
                "message_id": job.message_id,
                "from": job.mail_from or "<>",
                "to": list(job.recipients),
                "size": len(job.content),
            },
        )
