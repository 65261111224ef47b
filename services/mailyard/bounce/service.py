"""The bounce service: DSNs for failed, expired and suppressed recipients; the
suppression list's automatic entries; mail for local domains (asynchronous
bounces and complaints become events, and entries).

For each event, ``suppress.py`` says what to add to the suppression list and
``plan.py`` what DSN to queue; for each asynchronous report, ``inbound.py``
says what event it is and ``suppress.py`` what to add. The list's records are appended (durable)
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

from mailyard import ids, verp
from mailyard.bounce import metrics
from mailyard.bounce.arf import FEEDBACK_TYPES
from mailyard.bounce.inbound import Mailboxes, Result, Verdict, judge
from mailyard.bounce.plan import DsnPlan, plan_dsn
from mailyard.bounce.suppress import SuppressionPolicy, complaint, plan_suppressions
from mailyard.broker import Broker, Consumer, Emit, Output, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.classify import ADDRESS_GONE, BounceClass, Classifier
from mailyard.config import Settings
from mailyard.filewatch import Watched
from mailyard.reply import Reply
from mailyard.suppression import LOG_NAME, Added, Record, Struck, SuppressionReplica
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
        suppression = settings.suppression
        self.policy = SuppressionPolicy(
            hard_bounce_expiry=suppression.hard_bounce_expiry,
            expired_strikes=suppression.expired_strikes,
            expired_strikes_window=suppression.expired_strikes_window,
            expired_strikes_expiry=suppression.expired_strikes_expiry,
            unverified_complaints=suppression.unverified_complaints,
        )
        self.suppressions = SuppressionReplica(
            broker.log(LOG_NAME),
            service=self.name,
            strike_window=suppression.expired_strikes_window,
            snapshot_interval=suppression.snapshot_interval,
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
        """``address`` complained: never mail it again (from ``scope``, a sender
        domain, or from anyone when None). No expiry. ``complained`` events made
        here are suppressed by ``on_local`` already; this is for other callers."""
        now = datetime.now(UTC)
        await self.suppress(
            [complaint(address, scope=scope, reason=reason, now=now, bounce_class=bounce_class)]
        )

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
                    # A bounce of a gone address, a complaint: on the list
                    # (durable) before the report is released.
                    async with self._planning:
                        await self.suppress(
                            plan_suppressions(
                                verdict.event, self.suppressions.state, self.policy, now=now
                            )
                        )
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
