"""The delivery service: take a job, attempt it, report every recipient's fate."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from mailyard import wire
from mailyard.broker import (
    BatchConsumer,
    Delivery,
    EventKind,
    PublishError,
    QueueConsumer,
    Topology,
)
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.delivery import metrics
from mailyard.delivery.attempt import Deliverer
from mailyard.delivery.limits import DestinationLimiter
from mailyard.delivery.outcome import Outcome, outcome_of_result, recipient_result
from mailyard.delivery.pool import SessionPool
from mailyard.delivery.resolver import MxResolver
from mailyard.delivery.smtp import opportunistic_tls_context
from mailyard.events import EventPublisher, event_for
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class DeliveryService(ConsumingService):
    name = "delivery"

    def __init__(self, settings: Settings, topology: Topology) -> None:
        super().__init__(settings.broker, topology)
        self.events = EventPublisher(
            self.broker, recheck=settings.broker.unrouted_event_recheck.total_seconds()
        )
        self.settings = settings
        self.config = config = settings.delivery
        self.pool = SessionPool(
            enabled=config.connection_reuse,
            max_idle=config.idle_connection_timeout.total_seconds(),
            max_transactions=config.max_messages_per_connection,
            max_idle_per_host=config.max_connections_per_destination,
        )
        self.deliverer = Deliverer(
            MxResolver(
                config.nameservers,
                timeout=config.dns_timeout.total_seconds(),
                ipv6=config.ipv6,
                cache_size=config.dns_cache_size,
            ),
            self.pool,
            port=config.port,
            helo_name=settings.hostname,
            tls_context=opportunistic_tls_context() if config.tls == "opportunistic" else None,
            connect_timeout=config.connect_timeout.total_seconds(),
            command_timeout=config.command_timeout.total_seconds(),
        )
        self.limiter = DestinationLimiter(config.max_connections_per_destination)
        self.named_destinations = frozenset(settings.metrics.destinations)

    def consumers(self) -> list[QueueConsumer[Any]]:
        return [
            BatchConsumer(
                self.broker,
                self.broker.topology.delivery,
                pb.DeliveryJob,
                self.on_jobs,
                prefetch=self.config.concurrency,
            )
        ]

    async def started(self) -> None:
        self.pool.start()

    async def stopped(self) -> None:
        await self.pool.close()

    async def on_jobs(self, delivery: Delivery[list[pb.DeliveryJob]]) -> None:
        """Attempt a job, or the jobs of a batch side by side.

        The jobs of a batch run concurrently, each within the destination's
        connection limit and reusing its idle sessions, so a batch is as quick
        as the jobs would have been alone. One deadline covers the batch, so
        it is never held near the broker's consumer_timeout; jobs it cuts off
        are deferred. A job of a batch whose handling raises is sent back to
        the delivery queue on its own, where the usual retries and parking
        apply to it alone: the others are not attempted again for its sake.
        """
        jobs = delivery.payload
        if delivery.redelivered:
            metrics.POSSIBLE_DUPLICATES.inc(len(jobs))
        in_batch = len(jobs) > 1
        deadline = self.config.attempt_timeout.total_seconds()
        metrics.IN_FLIGHT.inc(len(jobs))
        attempts = [asyncio.create_task(self._attempt(job, in_batch=in_batch)) for job in jobs]
        try:
            _, late = await asyncio.wait(attempts, timeout=deadline)
            if late:
                metrics.DEADLINE_EXCEEDED.inc()
        finally:
            # Past the deadline, or this handler itself cancelled (shutdown).
            unfinished = [task for task in attempts if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
            metrics.IN_FLIGHT.dec(len(jobs))
        cut_off = Reply(451, "4.4.1", f"delivery attempt cut off after {deadline:g}s")
        outcomes: list[list[pb.RecipientResult] | Exception] = []
        for job, task in zip(jobs, attempts, strict=True):
            if task.cancelled():
                outcomes.append([recipient_result(r, cut_off) for r in job.recipients])
                metrics.JOBS.inc()
            else:
                outcomes.append(task.result())  # a single job's error is raised here
        finishing = [
            self._finish(job, outcome, in_batch=in_batch)
            for job, outcome in zip(jobs, outcomes, strict=True)
        ]
        await (finishing[0] if len(finishing) == 1 else asyncio.gather(*finishing))

    async def _attempt(
        self, job: pb.DeliveryJob, *, in_batch: bool
    ) -> list[pb.RecipientResult] | Exception:
        started = time.perf_counter()
        try:
            async with self.limiter.slot(job.domain):
                results = await self.deliverer.attempt(job)
        except Exception as exc:
            if not in_batch:
                raise
            return exc
        metrics.JOBS.inc()
        metrics.ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        return results

    async def _finish(
        self, job: pb.DeliveryJob, outcome: list[pb.RecipientResult] | Exception, *, in_batch: bool
    ) -> None:
        if isinstance(outcome, Exception):
            await self._send_back_alone(job, outcome)
            return
        try:
            await self.report(job, outcome)
        except PublishError:
            raise  # the broker is in trouble: the whole input comes back
        except Exception as exc:
            if not in_batch:
                raise
            await self._send_back_alone(job, exc)

    async def _send_back_alone(self, job: pb.DeliveryJob, error: Exception) -> None:
        log.warning(
            "a job failed in a batch; sent back to the queue on its own",
            exc_info=error,
            extra={"message_id": job.message_id, "queue_id": job.queue_id},
        )
        await self.broker.publish(self.broker.topology.delivery, wire.encode_job(job))

    async def report(self, job: pb.DeliveryJob, results: list[pb.RecipientResult]) -> None:
        """Publish what happened; returns once the broker has confirmed all of it."""
        now = datetime.now(UTC)
        by_outcome: dict[Outcome, list[pb.RecipientResult]] = {o: [] for o in Outcome}
        for result in results:
            by_outcome[outcome_of_result(result)].append(result)
        attempts = job.attempts + 1

        publishes = []
        kinds = {
            Outcome.DELIVERED: EventKind.DELIVERED,
            Outcome.FAILED: EventKind.FAILED,
            Outcome.DEFERRED: EventKind.DEFERRED,
        }
        quote_limit = self.settings.bounce.max_quoted_headers
        for outcome, kind in kinds.items():
            if by_outcome[outcome]:
                event = event_for(
                    kind, job, by_outcome[outcome], now=now, attempts=attempts,
                    quote_limit=quote_limit,
                )  # fmt: skip
                publishes.append(self.events.publish(kind, event))
        if by_outcome[Outcome.DEFERRED]:
            # The only place the body is copied: the job goes round again.
            retry = pb.DeliveryJob()
            retry.CopyFrom(job)
            retry.attempts = attempts
            del retry.recipients[:]
            retry.recipients.extend(r.recipient for r in by_outcome[Outcome.DEFERRED])
            del retry.last_results[:]
            retry.last_results.extend(by_outcome[Outcome.DEFERRED])
            publishes.append(
                self.broker.publish(self.broker.topology.deferred, wire.encode_job(retry))
            )
        if len(publishes) == 1:
            await publishes[0]
        elif publishes:
            await asyncio.gather(*publishes)
        self._account(job, by_outcome, now)

    def _account(
        self,
        job: pb.DeliveryJob,
        by_outcome: dict[Outcome, list[pb.RecipientResult]],
        now: datetime,
    ) -> None:
        age = (now - wire.to_datetime(job.received_at)).total_seconds()
        destination = job.domain if job.domain in self.named_destinations else "other"
        for outcome, results in by_outcome.items():
            if results:
                metrics.DESTINATION_RECIPIENTS.labels(destination, outcome.value).inc(len(results))
            for result in results:
                metrics.RECIPIENTS.labels(outcome.value, f"{result.reply.code // 100}xx").inc()
                if outcome is Outcome.DELIVERED:
                    metrics.LATENCY_SECONDS.observe(age)
                log.info(
                    outcome.value,
                    extra={
                        "message_id": job.message_id,
                        "queue_id": job.queue_id,
                        "to": result.recipient,
                        "relay": result.remote_mta or "none",
                        "delay": round(age, 3),
                        "attempt": job.attempts + 1,
                        "reply": f"{result.reply.code} {result.reply.status} {result.reply.text}",
                    },
                )
