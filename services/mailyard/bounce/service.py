"""The bounce service: DSNs for failed, expired and suppressed recipients; the
suppression list's automatic entries; mail for local domains.

For each event, ``suppress.py`` says what to add to the suppression list and
``plan.py`` what DSN to queue. The list's records are appended (durable)
before the event is released, so a crash in between adds them again, which
changes nothing (an address already suppressed gets no new entry, a strike
has the message's id as its key).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from mailyard import ids
from mailyard.bounce import metrics
from mailyard.bounce.plan import DsnPlan, plan_dsn
from mailyard.bounce.suppress import SuppressionPolicy, complaint, plan_suppressions
from mailyard.broker import Broker, Consumer, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.classify import ADDRESS_GONE, BounceClass
from mailyard.config import Settings
from mailyard.suppression import LOG_NAME, Added, Record, Struck, SuppressionReplica
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class BounceService(ConsumingService):
    name = "bounce"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(broker)
        self.settings = settings
        config = settings.suppression
        self.policy = SuppressionPolicy(
            hard_bounce_expiry=config.hard_bounce_expiry,
            expired_strikes=config.expired_strikes,
            expired_strikes_window=config.expired_strikes_window,
            expired_strikes_expiry=config.expired_strikes_expiry,
        )
        self.suppressions = SuppressionReplica(
            broker.log(LOG_NAME),
            service=self.name,
            strike_window=config.expired_strikes_window,
            snapshot_interval=config.snapshot_interval,
            writes_snapshots=True,
        )
        for bounce_class in (*sorted(ADDRESS_GONE), BounceClass.MESSAGE_EXPIRED):
            metrics.SUPPRESSIONS_ADDED.labels("bounce", bounce_class.value)
        metrics.SUPPRESSIONS_ADDED.labels("complaint", "")
        self._planning = asyncio.Lock()
        metrics.DSNS_SKIPPED.labels("notify")

    async def started(self) -> None:
        await self.suppressions.load()
        self.suppressions.start()

    async def stopped(self) -> None:
        await self.suppressions.stop()

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
            # Handlers run side by side (bounce.prefetch): one plans only after
            # the previous one's records are in, so two expiries count two.
            async with self._planning:
                await self.suppress(
                    plan_suppressions(event, self.suppressions.state, self.policy, now=now)
                )
            dsn_id = ids.new_message_id()
            plan = plan_dsn(event, reporting_mta=self.settings.hostname, dsn_id=dsn_id, now=now)
            outputs += plan.outputs
            work.then(functools.partial(_account, event, plan, dsn_id))
        return outputs

    async def suppress(self, records: Sequence[Record]) -> None:
        """Append ``records`` to the suppression list (every replica sees them) and count them."""
        if not records:
            return
        await self.suppressions.append(records)
        for record in records:
            if isinstance(record, Added):
                entry = record.entry
                metrics.SUPPRESSIONS_ADDED.labels(
                    entry.source.value, entry.bounce_class or ""
                ).inc()
                log.info(
                    "suppressed",
                    extra={
                        "to": entry.address,
                        "source": entry.source.value,
                        "class": entry.bounce_class,
                        "expires": entry.expires.isoformat() if entry.expires else None,
                    },
                )
            elif isinstance(record, Struck):
                metrics.SUPPRESSION_STRIKES.inc()

    async def suppress_complaint(
        self, address: str, *, scope: str | None, reason: str, bounce_class: str | None = None
    ) -> None:
        """For the feedback-loop parser: ``address`` complained; never mail it again
        (from ``scope``, a sender domain, or from anyone when None). No expiry."""
        now = datetime.now(UTC)
        await self.suppress(
            [complaint(address, scope=scope, reason=reason, now=now, bounce_class=bounce_class)]
        )

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
    if plan.skipped == "notify":
        metrics.DSNS_SKIPPED.labels("notify").inc()
        log.info("no DSN: the client asked for none (NOTIFY)", extra=trace)
        return
    if plan.skipped is not None:
        return
    metrics.DSNS.labels(plan.kind).inc()
    for result in plan.reported:
        metrics.DSN_RECIPIENTS.labels(plan.kind, result.bounce_class).inc()
    log.info(
        "DSN queued",
        extra={
            **trace,
            "dsn_id": dsn_id,
            "to": event.mail_from,
            "kind": plan.kind,
            "recipients": len(plan.reported),
        },
    )
