"""The bounce service: DSNs for failed and expired recipients; mail for local domains."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from mailyard import ids, verp
from mailyard.bounce import metrics
from mailyard.bounce.arf import FEEDBACK_TYPES
from mailyard.bounce.inbound import Mailboxes, Result, Verdict, judge
from mailyard.bounce.plan import DsnPlan, plan_dsn
from mailyard.broker import Broker, Consumer, Emit, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.classify import Classifier
from mailyard.config import Settings
from mailyard.filewatch import Watched
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)


class BounceService(ConsumingService):
    name = "bounce"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(broker)
        self.settings = settings
        config = settings.bounce
        self.classifier = Classifier(
            config.classification.rules_files, key="bounce.classification.rules_files"
        )
        # The secret is read now: a missing or short one stops start-up.
        self.keyring: Watched[verp.Keyring] | None = (
            verp.watch_keyring(config.verp_secret_file)
            if config.return_path_domain is not None and config.verp_secret_file is not None
            else None
        )
        for result in Result:
            metrics.ASYNC.labels(result.value)  # zero series from the start
        for feedback_type in FEEDBACK_TYPES:
            metrics.COMPLAINTS.labels(feedback_type)

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
        """Asynchronous bounces and complaints become events; the rest is counted."""
        mailboxes = Mailboxes(
            hostname=self.settings.hostname,
            return_path_domain=self.settings.bounce.return_path_domain,
            keyring=self.keyring.value if self.keyring is not None else None,
        )
        outputs: list[Output] = []
        now = datetime.now(UTC)
        for job in work.items:
            verdicts = judge(job, mailboxes=mailboxes, classify=self._classify, now=now)
            for verdict in verdicts:
                if verdict.event is not None and verdict.kind is not None:
                    outputs.append(Emit(verdict.kind, verdict.event))
            work.then(functools.partial(_account_local, job, verdicts))
        return outputs

    def _classify(self, reply: Reply) -> str:
        return self.classifier.classify(reply).value


def _account_local(job: pb.DeliveryJob, verdicts: list[Verdict]) -> None:
    metrics.LOCAL_MESSAGES.inc()
    for verdict in verdicts:
        metrics.ASYNC.labels(verdict.result.value).inc()
        if verdict.result is Result.COMPLAINED:
            metrics.COMPLAINTS.labels(verdict.feedback_type).inc()
        extra: dict[str, object] = {
            "message_id": job.message_id,
            "queue_id": job.queue_id,
            "from": job.mail_from or "<>",
            "to": verdict.address,
            "result": verdict.result.value,
            "size": len(job.content),
        }
        if verdict.detail:
            extra["detail"] = verdict.detail[:300]
        if verdict.event is not None:
            result = verdict.event.results[0]
            extra |= {
                "recipient": result.recipient,
                "class": result.bounce_class,
                "original_message_id": verdict.event.message_id,
                "verified": verdict.event.verified,
            }
        level = logging.WARNING if verdict.result is Result.FORGED else logging.INFO
        log.log(level, "received for a local domain", extra=extra)


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
