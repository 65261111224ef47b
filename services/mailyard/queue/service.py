"""The queue service: split accepted mail into jobs; schedule or expire deferrals.

Each handler decodes nothing and publishes nothing itself: the broker port
hands it decoded work, ``plan.py`` says what to publish, the port stores it
and releases the input, and the handler accounts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from mailyard.broker import Broker, Consumer, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.durations import format_duration
from mailyard.queue import metrics
from mailyard.queue.plan import plan_accepted, plan_deferral
from mailyard.queue.schedule import Expire, Retry
from mailyard.queue.split import Split
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class QueueService(ConsumingService):
    name = "queue"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(broker)
        self.settings = settings
        self.config = settings.queue
        self.local_domains = frozenset(settings.ingress.local_domains)

    def consumers(self) -> list[Consumer]:
        prefetch = self.config.prefetch
        return [
            self.broker.consumer(
                QueueName.INBOUND, pb.AcceptedMessage, self.on_accepted, prefetch=prefetch
            ),
            self.broker.consumer(
                QueueName.DEFERRED, pb.DeliveryJob, self.on_deferred, prefetch=prefetch
            ),
        ]

    async def on_accepted(self, work: Work[pb.AcceptedMessage]) -> Sequence[Output]:
        batching = self.config.delivery_batch
        plan = plan_accepted(
            work.items,
            local_domains=self.local_domains,
            max_recipients_per_job=self.config.max_recipients_per_job,
            lifetime=self.config.max_lifetime,
            max_jobs=batching.max_jobs,
            # Never more than the size ingress's start-up probe proved the broker takes.
            max_bytes=min(batching.max_bytes, self.settings.ingress.max_message_size),
            may_repeat=work.redelivered,
        )
        work.then(lambda: self._account(work.items, plan.splits, plan.batch_sizes))
        return plan.outputs

    def _account(
        self, messages: list[pb.AcceptedMessage], splits: list[Split], batch_sizes: list[int]
    ) -> None:
        for size in batch_sizes:
            metrics.BATCH_JOBS.observe(size)
        for message, split in zip(messages, splits, strict=True):
            self._account_message(message, split)

    def _account_message(self, message: pb.AcceptedMessage, split: Split) -> None:
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

    async def on_deferred(self, work: Work[pb.DeliveryJob]) -> Sequence[Output]:
        outputs: list[Output] = []
        now = datetime.now(UTC)
        for job in work.items:
            planned, step = plan_deferral(
                job,
                now=now,
                retry_delays=self.config.retry_delays,
                quote_limit=self.settings.bounce.max_quoted_headers,
            )
            outputs += planned
            work.then(functools.partial(_account_deferral, job, step))
        return outputs


def _account_deferral(job: pb.DeliveryJob, step: Retry | Expire) -> None:
    context = {
        "message_id": job.message_id,
        "queue_id": job.queue_id,
        "domain": job.domain,
        "attempts": job.attempts,
    }
    if isinstance(step, Expire):
        metrics.EXPIRED.inc()
        metrics.EXPIRED_RECIPIENTS.inc(len(job.recipients))
        log.warning("expired", extra={**context, "recipients": len(job.recipients)})
    else:
        metrics.RETRIES.labels(format_duration(step.delay)).inc()
        log.info("retry scheduled", extra={**context, "delay": format_duration(step.delay)})
