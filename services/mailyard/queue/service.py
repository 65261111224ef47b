"""The queue service: split accepted mail into jobs; schedule or expire deferrals."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from mailyard import wire
from mailyard.broker import BatchConsumer, Consumer, Delivery, EventKind, QueueConsumer, Topology
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.durations import format_duration
from mailyard.events import EventPublisher, event_for
from mailyard.queue import metrics
from mailyard.queue.schedule import Expire, after_deferral
from mailyard.queue.split import Split, delivery_batches, split_message
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class QueueService(ConsumingService):
    name = "queue"

    def __init__(self, settings: Settings, topology: Topology) -> None:
        super().__init__(settings.broker, topology)
        self.events = EventPublisher(
            self.broker, recheck=settings.broker.unrouted_event_recheck.total_seconds()
        )
        self.settings = settings
        self.config = settings.queue
        self.local_domains = frozenset(settings.ingress.local_domains)

    def consumers(self) -> list[QueueConsumer[Any]]:
        topology, prefetch = self.broker.topology, self.config.prefetch
        return [
            BatchConsumer(
                self.broker,
                topology.inbound,
                pb.AcceptedMessage,
                self.on_accepted,
                prefetch=prefetch,
            ),
            Consumer(
                self.broker, topology.deferred, pb.DeliveryJob, self.on_deferred, prefetch=prefetch
            ),
        ]

    async def on_accepted(self, delivery: Delivery[list[pb.AcceptedMessage]]) -> None:
        messages = delivery.payload
        splits = [
            split_message(
                message,
                local_domains=self.local_domains,
                max_recipients_per_job=self.config.max_recipients_per_job,
                lifetime=self.config.max_lifetime,
            )
            for message in messages
        ]
        topology, batching = self.broker.topology, self.config.delivery_batch
        batches = delivery_batches(
            (job for split in splits for job in split.remote),
            max_jobs=batching.max_jobs,
            # Never more than the size ingress's start-up probe proved the broker takes.
            max_bytes=min(batching.max_bytes, self.settings.ingress.max_message_size),
        )
        publishes = [self._publish_batch(topology.delivery, batch) for batch in batches] + [
            self._publish_job(topology.local, job) for split in splits for job in split.local
        ]
        # All or nothing: the input is acked only when every job is confirmed.
        # If one fails, the input comes back and is split again with the
        # same queue ids (jobs already stored are then duplicated; rare, and
        # within what at-least-once allows).
        await (publishes[0] if len(publishes) == 1 else asyncio.gather(*publishes))
        for batch in batches:
            metrics.BATCH_JOBS.observe(len(batch))
        for message, split in zip(messages, splits, strict=True):
            self._account(message, split)

    def _account(self, message: pb.AcceptedMessage, split: Split) -> None:
        routed = sum(len(job.recipients) for job in split.remote + split.local)
        metrics.MESSAGES.inc()
        metrics.JOBS.labels("remote").inc(len(split.remote))
        metrics.JOBS.labels("local").inc(len(split.local))
        metrics.RECIPIENTS.labels("remote").inc(sum(len(j.recipients) for j in split.remote))
        metrics.RECIPIENTS.labels("local").inc(sum(len(j.recipients) for j in split.local))
        metrics.DUPLICATE_RECIPIENTS.inc(len(message.recipients) - routed)
        log.info(
            "queued",
            extra={
                "message_id": message.message_id,
                "jobs": len(split.remote) + len(split.local),
                "domains": sorted({job.domain for job in split.remote + split.local})[:20],
            },
        )

    async def _publish_batch(self, queue: str, jobs: list[pb.DeliveryJob]) -> None:
        await self.broker.publish(queue, wire.encode_items(jobs))

    async def _publish_job(self, queue: str, job: pb.DeliveryJob) -> None:
        await self.broker.publish(queue, wire.encode_job(job))

    async def on_deferred(self, delivery: Delivery[pb.DeliveryJob]) -> None:
        job = delivery.payload
        now = datetime.now(UTC)
        step = after_deferral(
            attempts=job.attempts,
            expires_at=wire.to_datetime(job.expires_at),
            now=now,
            retry_delays=self.config.retry_delays,
        )
        if isinstance(step, Expire):
            results = list(job.last_results) or [
                pb.RecipientResult(
                    recipient=r,
                    reply=pb.SmtpReply(code=451, status="4.4.7", text="delivery time expired"),
                )
                for r in job.recipients
            ]
            await self.events.publish(
                EventKind.EXPIRED,
                event_for(
                    EventKind.EXPIRED,
                    job,
                    results,
                    now=now,
                    quote_limit=self.settings.bounce.max_quoted_headers,
                ),
            )
            metrics.EXPIRED.inc()
            metrics.EXPIRED_RECIPIENTS.inc(len(job.recipients))
            log.warning(
                "expired",
                extra={
                    "message_id": job.message_id,
                    "queue_id": job.queue_id,
                    "domain": job.domain,
                    "attempts": job.attempts,
                    "recipients": len(job.recipients),
                },
            )
            return
        await self._publish_job(self.broker.topology.retry_queue(step.delay), job)
        metrics.RETRIES.labels(format_duration(step.delay)).inc()
        log.info(
            "retry scheduled",
            extra={
                "message_id": job.message_id,
                "queue_id": job.queue_id,
                "domain": job.domain,
                "attempts": job.attempts,
                "delay": format_duration(step.delay),
            },
        )
