"""The queue service: sign and split accepted mail into jobs; schedule or expire deferrals.

Each handler decodes nothing and publishes nothing itself: the broker port
hands it decoded work, ``plan.py`` says what to publish, the port stores it
and releases the input, and the handler accounts. Accepted messages are
DKIM-signed (``signing.py``) just before they are planned, so the planner
stays pure and every job of a message carries the same signed bytes. Before
anything else, each message gets its class (``classes.py``: the users file,
``queue.sender_classes``, ``X-Mailyard-Class:``, transactional), which picks the
delivery lane of its jobs, and loses its ``X-Mailyard-Class:`` header, so that
neither the signature nor the recipient sees it. Recipients on
the suppression list (this process's replica of it, loaded before the first
message is taken and following the log after) are left out of the jobs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from mailyard import sevenbit
from mailyard.broker import Broker, Consumer, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.config import Settings
from mailyard.durations import format_duration
from mailyard.events import Quoting
from mailyard.queue import metrics
from mailyard.queue.classes import ClassPolicy, Decision, classify
from mailyard.queue.classes import Source as ClassSource
from mailyard.queue.feedback import FeedbackIdSource, with_feedback_id
from mailyard.queue.plan import DeferralPlan, plan_accepted, plan_deferral
from mailyard.queue.returnpath import ReturnPaths, with_envelope_from
from mailyard.queue.schedule import Expire
from mailyard.queue.signing import UNSIGNED_REASONS, Signed, Signer, Unsigned
from mailyard.queue.split import Split
from mailyard.queue.suppress import Suppressed
from mailyard.suppression import LOG_NAME, Source, SuppressionReplica
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class QueueService(ConsumingService):
    name = "queue"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(broker)
        self.settings = settings
        bounce = settings.bounce
        self.quoting = Quoting(bounce.max_quoted_headers, bounce.max_quoted_message)
        self.config = settings.queue
        self.local_domains = frozenset(settings.ingress.local_domains)
        self.classes = ClassPolicy(frozenset(self.config.classes), self.config.sender_classes)
        # Bound once, zero series from the start: a labels() lookup per
        # message showed in the profile.
        self._classified = {
            (mail_class, decided): metrics.CLASSIFIED.labels(mail_class, decided.value)
            for mail_class in self.config.classes
            for decided in ClassSource
        }
        self._remote_jobs = metrics.JOBS.labels("remote")
        self._local_jobs = metrics.JOBS.labels("local")
        self._remote_recipients = metrics.RECIPIENTS.labels("remote")
        self._local_recipients = metrics.RECIPIENTS.labels("local")
        for given in (ClassSource.HEADER, ClassSource.USER):
            metrics.CLASS_IGNORED.labels(given.value)
        # The key files are read now: one that cannot sign stops start-up
        # with its key named (filewatch.FileProblem). No keys, no signing.
        keys = settings.dkim.keys
        self.signer = Signer(keys) if keys else None
        feedback = self.config.feedback_id
        self.feedback_id = (
            FeedbackIdSource(
                feedback.sender_id,
                feedback.campaign_header,
                feedback.customer_header,
                feedback.mail_type_header,
            )
            if feedback is not None
            else None
        )
        bounce = settings.bounce
        # VERP on: one job per remote recipient, each with its signed return path.
        self.return_paths = (
            ReturnPaths(bounce.return_path_domain, bounce.verp_secret_file)
            if bounce.return_path_domain is not None and bounce.verp_secret_file is not None
            else None
        )
        for domain in self.signer.domains if self.signer is not None else []:
            metrics.DKIM_SIGNED.labels(domain)  # zero series from the start
        for reason in UNSIGNED_REASONS:
            metrics.DKIM_UNSIGNED.labels(reason)
        for source in Source:
            metrics.SUPPRESSED.labels(source.value)
        self.suppressions = SuppressionReplica(
            broker.log(LOG_NAME),
            service=self.name,
            strike_window=settings.suppression.expired_strikes_window,
            snapshot_interval=settings.suppression.snapshot_interval,
        )

    async def started(self) -> None:
        # Before the first message: none is planned against a half-read list.
        await self.suppressions.load()
        self.suppressions.start()

    async def stopped(self) -> None:
        await self.suppressions.stop()

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
        classified = [classify(message, self.classes) for message in work.items]
        decisions = [decision for _, decision in classified]
        # Lines over 998 octets (BDAT can bring them) never reach the wire.
        messages = [_short_lines(message) for message, _ in classified]
        if self.feedback_id is not None:
            messages = [_with_feedback_id(m, self.feedback_id) for m in messages]
        if self.return_paths is not None:
            messages = [_with_envelope_from(m) for m in messages]
        signing: list[Signed | Unsigned | None] = [None] * len(messages)
        if self.signer is not None:
            # dkimpy's RSA is pure Python (milliseconds a signature): off the
            # event loop, which ingress may share (`mailyard all`).
            messages, signing = await asyncio.to_thread(sign_messages, self.signer, messages)
        batching = self.config.delivery_batch
        plan = plan_accepted(
            messages,
            local_domains=self.local_domains,
            max_recipients_per_job=self.config.max_recipients_per_job,
            lifetime=self.config.max_lifetime,
            max_jobs=batching.max_jobs,
            # Never more than the size ingress's start-up probe proved the broker takes.
            max_bytes=min(batching.max_bytes, self.settings.ingress.max_message_size),
            may_repeat=work.redelivered,
            return_path=self.return_paths,
            suppressions=self.suppressions.state,
            now=datetime.now(UTC),
            quoting=self.quoting,
        )
        work.then(
            lambda: self._account(
                messages, plan.splits, plan.batch_sizes, signing, plan.suppressed, decisions
            )
        )
        return plan.outputs

    def _account(
        self,
        messages: list[pb.AcceptedMessage],
        splits: list[Split],
        batch_sizes: list[int],
        signing: list[Signed | Unsigned | None],
        suppressed: list[list[Suppressed]],
        decisions: list[Decision],
    ) -> None:
        for size in batch_sizes:
            metrics.BATCH_JOBS.observe(size)
        for message, split, signed, taken, decision in zip(
            messages, splits, signing, suppressed, decisions, strict=True
        ):
            self._account_message(message, split, signed, taken, decision)

    def _account_message(
        self,
        message: pb.AcceptedMessage,
        split: Split,
        signed: Signed | Unsigned | None,
        suppressed: list[Suppressed],
        decision: Decision,
    ) -> None:
        # A decision's class is always one of queue.classes (classes.py; the
        # config requires "transactional").
        self._classified[decision.mail_class, decision.source].inc()
        for ignored in decision.ignored:
            metrics.CLASS_IGNORED.labels(ignored.source.value).inc()
            log.warning(
                "ignored a message class that queue.classes does not have",
                extra={
                    "message_id": message.message_id,
                    "given_by": "X-Mailyard-Class" if ignored.source is ClassSource.HEADER
                    else "users file",
                    "given": ignored.name,
                    "class": decision.mail_class,
                },
            )  # fmt: skip
        left_out = 0
        for taken in suppressed:
            left_out += len(taken.entries)
            for entry in taken.entries:
                metrics.SUPPRESSED.labels(entry.source.value).inc()
            log.info(
                "suppressed",
                extra={
                    "message_id": message.message_id,
                    "queue_id": taken.event.queue_id,
                    "to": [r.recipient for r in taken.event.results][:20],
                    "sources": sorted({e.source.value for e in taken.entries}),
                },
            )
        routed = left_out + sum(len(job.recipients) for job in split.remote + split.local)
        metrics.MESSAGES.inc()
        self._remote_jobs.inc(len(split.remote))
        self._local_jobs.inc(len(split.local))
        self._remote_recipients.inc(sum(len(j.recipients) for j in split.remote))
        self._local_recipients.inc(sum(len(j.recipients) for j in split.local))
        metrics.DUPLICATE_RECIPIENTS.inc(len(message.recipients) - routed)
        extra = {
            "message_id": message.message_id,
            "class": decision.mail_class,
            "class_by": decision.source.value,
            "jobs": len(split.remote) + len(split.local),
            "domains": sorted({job.domain for job in split.remote + split.local})[:20],
        }
        if isinstance(signed, Signed):
            for domain in dict.fromkeys(signed.domains):
                metrics.DKIM_SIGNED.labels(domain).inc()
            extra["dkim"] = list(signed.domains)
        elif isinstance(signed, Unsigned):
            metrics.DKIM_UNSIGNED.labels(signed.reason).inc()
            extra["dkim_unsigned"] = signed.reason
            if signed.reason == "error":
                log.warning(
                    "not DKIM-signed: dkimpy refused the message",
                    extra={"message_id": message.message_id, "error": signed.detail},
                )
        log.info("queued", extra=extra)

    async def on_deferred(self, work: Work[pb.DeliveryJob]) -> Sequence[Output]:
        outputs: list[Output] = []
        now = datetime.now(UTC)
        for job in work.items:
            plan = plan_deferral(
                job,
                now=now,
                retry_delays=self.config.retry_delays,
                quoting=self.quoting,
                delay_warning=self.config.delay_warning,
                may_repeat=work.redelivered,
            )
            outputs += plan.outputs
            work.then(functools.partial(_account_deferral, job, plan))
        return outputs


def _with_content(message: pb.AcceptedMessage, content: bytes) -> pb.AcceptedMessage:
    """A copy of ``message`` with other content (the one received stays as it was)."""
    copy = pb.AcceptedMessage()
    copy.CopyFrom(message)
    copy.content = content
    return copy


def _with_feedback_id(message: pb.AcceptedMessage, source: FeedbackIdSource) -> pb.AcceptedMessage:
    if message.origin != pb.ORIGIN_SMTP:  # our own notices are not anyone's campaign
        return message
    return _with_content(message, with_feedback_id(message.content, message.client.login, source))


def _with_envelope_from(message: pb.AcceptedMessage) -> pb.AcceptedMessage:
    if not message.mail_from:  # the null sender is never rewritten: nothing to remember
        return message
    return _with_content(message, with_envelope_from(message.content, message.mail_from))


def _short_lines(message: pb.AcceptedMessage) -> pb.AcceptedMessage:
    if not sevenbit.has_long_line(message.content):
        return message
    return _with_content(message, sevenbit.convert(message.content))


def sign_messages(
    signer: Signer, messages: Sequence[pb.AcceptedMessage]
) -> tuple[list[pb.AcceptedMessage], list[Signed | Unsigned | None]]:
    """Each message signed (a new one with the signed content) or as it was, and why."""
    results: list[pb.AcceptedMessage] = []
    outcomes: list[Signed | Unsigned | None] = []
    for message in messages:
        try:
            signed = signer.sign(message.content)
        except Unsigned as unsigned:
            results.append(message)
            outcomes.append(unsigned)
            continue
        except Exception as exc:  # a bug of ours or dkimpy's must not hold mail back
            log.exception("DKIM signing failed", extra={"message_id": message.message_id})
            results.append(message)
            outcomes.append(Unsigned("error", f"{type(exc).__name__}: {exc}"))
            continue
        results.append(_with_content(message, signed.content))
        outcomes.append(signed)
    return results, outcomes


def _account_deferral(job: pb.DeliveryJob, plan: DeferralPlan) -> None:
    context = {
        "message_id": job.message_id,
        "queue_id": job.queue_id,
        "domain": job.domain,
        "attempts": job.attempts,
    }
    step = plan.step
    if isinstance(step, Expire):
        metrics.EXPIRED.inc()
        metrics.EXPIRED_RECIPIENTS.inc(len(job.recipients))
        log.warning("expired", extra={**context, "recipients": len(job.recipients)})
        return
    metrics.RETRIES.labels(format_duration(step.delay)).inc()
    log.info("retry scheduled", extra={**context, "delay": format_duration(step.delay)})
    if plan.warned:
        metrics.DELAY_WARNINGS.inc(plan.warned)
        log.info("delay warning due", extra={**context, "recipients": plan.warned})
