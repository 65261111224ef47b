"""The bounce service: DSNs for failed and expired recipients; mail for local domains."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from mailyard import ids
from mailyard.bounce import metrics
from mailyard.bounce.plan import DsnPlan, plan_dsn
from mailyard.broker import Broker, Consumer, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class BounceService(ConsumingService):
    name = "bounce"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(broker)
        self.settings = settings

    def consumers(self) -> list[Consumer]:
        prefetch = self.settings.bounce.prefetch
        return [
            self.broker.consumer(
                QueueName.BOUNCE, pb.DeliveryEvent, self.on_event, prefetch=prefetch
            ),
            self.broker.consumer(QueueName.LOCAL, pb.DeliveryJob, self.on_local, prefetch=prefetch),
        ]

    async def on_event(self, work: Work[pb.DeliveryEvent]) -> Sequence[Output]:
        outputs: list[Output] = []
        now = datetime.now(UTC)
        for event in work.items:
            dsn_id = ids.new_message_id()
            plan = plan_dsn(event, reporting_mta=self.settings.hostname, dsn_id=dsn_id, now=now)
            outputs += plan.outputs
            work.then(functools.partial(_account, event, plan, dsn_id))
        return outputs

    async def on_local(self, work: Work[pb.DeliveryJob]) -> Sequence[Output]:
        # Parsing asynchronous bounces and complaints comes later; for now
        # the message is counted, logged and kept from ever being relayed.
        for job in work.items:
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
        return []


def _account(event: pb.DeliveryEvent, plan: DsnPlan, dsn_id: str) -> None:
    trace = {"message_id": event.message_id, "queue_id": event.queue_id}
    if plan.skipped == "null_sender":
        metrics.DSNS_SKIPPED.labels("null_sender").inc()
        log.info("no DSN for the null sender", extra=trace)
        return
    if plan.skipped is not None:
        return
    metrics.DSNS.labels(plan.kind).inc()
    for result in event.results:
        metrics.DSN_RECIPIENTS.labels(plan.kind, result.bounce_class).inc()
    log.info(
        "DSN queued",
        extra={
            **trace,
            "dsn_id": dsn_id,
            "to": event.mail_from,
            "kind": plan.kind,
            "recipients": len(event.results),
        },
    )
