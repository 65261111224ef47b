"""The bounce service: DSNs for failed, expired, suppressed, delayed and relayed
recipients; the suppression list's automatic entries; local mail.

Each event is first planned against the suppression list (``suppress.py``:
hard bounces, expiry strikes) and its records appended (durable), one event
at a time, before anything else becomes of it: so every event is planned
once, whether it then needs a DSN or not, and not again when its group is
flushed or re-planned. A crash before the event is released plans it again
on redelivery, which changes nothing (an address already suppressed gets no
new entry, a strike has the message's id as its key).

An event that needs no DSN (the null sender, nobody asked, not a DSN kind)
is then released at once. The others wait in the DSN window (``window.py``)
for the other notices of their message, become one DSN (``plan.py``: the
suppressed recipients of a message are failed ones, in the same DSN as its
other failures), and are released once it is stored. Mail for the local
domains is judged (``inbound.py``): asynchronous bounces and complaints
become events, and entries on the list before they are released.
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
from mailyard.bounce.notice import group_key, wanted
from mailyard.bounce.plan import DsnPlan, plan_dsn, skip_reason
from mailyard.bounce.suppress import SuppressionPolicy, complaint, plan_suppressions
from mailyard.bounce.window import Window
from mailyard.broker import Broker, Consumer, Emit, Output, PublishError, QueueName, Work
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
        self.window = Window(
            config.dsn_window.total_seconds(), self._notify, max_events=config.prefetch
        )
        metrics.WINDOW_EVENTS.set_function(lambda: self.window.waiting)
        for reason in ("null_sender", "not_requested"):
            metrics.DSNS_SKIPPED.labels(reason)  # zero series from the start
        for result in Result:
            metrics.ASYNC.labels(result.value)
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

    async def stop(self, grace: float) -> None:
        self.window.close_all()  # what waits goes now, not at the end of its window
        await super().stop(grace)

    async def on_event(self, work: Work[pb.DeliveryEvent]) -> Sequence[Output]:
        now = datetime.now(UTC)
        for event in work.items:
            # The list first, once per event, whatever becomes of its DSN (none
            # for the null sender or NOTIFY=NEVER; a group re-planned one by
            # one), and before any of them waits: a log that refuses hands the
            # whole input back. Handlers run side by side (bounce.prefetch, and
            # the window holds them): one plans only after the previous one's
            # records are in, so two expiries count two.
            async with self._planning:
                await self.suppress(
                    plan_suppressions(event, self.suppressions.state, self.policy, now=now)
                )
        waits = []
        for event in work.items:
            key = group_key(event)
            reason = skip_reason(event) or (None if wanted(event) else "not_requested")
            if reason is not None or key is None:
                work.then(functools.partial(_account_skip, event, reason or "not_ours"))
                continue
            waits.append(self.window.add(key, event))
        # Released (by returning) only once the DSN with every event of this
        # input is stored; its outputs were stored by the window's flush.
        for error in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(error, BaseException):
                raise error
        return []

    async def _notify(self, events: list[pb.DeliveryEvent]) -> list[BaseException | None]:
        """One DSN for a group's events, stored; what became of each event."""
        dsn_id = ids.new_message_id()
        try:
            plan = plan_dsn(
                events,
                reporting_mta=self.settings.hostname,
                dsn_id=dsn_id,
                now=datetime.now(UTC),
                quote_limit=self.settings.bounce.max_quoted_message,
            )
        except Exception as exc:
            if len(events) == 1:
                log.exception("cannot make a DSN of this event", extra=_trace(events[0]))
                return [exc]
            # One event that will not plan must not hold back the others' notice.
            return [error for event in events for error in await self._notify([event])]
        try:
            if plan.outputs:
                await self.broker.store(plan.outputs)
        except PublishError as exc:
            return [exc] * len(events)
        _account(events, plan, dsn_id)
        return [None] * len(events)

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


def _trace(event: pb.DeliveryEvent) -> dict[str, str]:
    return {"message_id": event.message_id, "queue_id": event.queue_id}


def _account_skip(event: pb.DeliveryEvent, reason: str) -> None:
    if reason == "not_ours":
        return  # nothing but DSN kinds is bound to the bounce queue
    metrics.DSNS_SKIPPED.labels(reason).inc()
    what = "the null sender" if reason == "null_sender" else "recipients who asked for none"
    log.info(f"no DSN for {what}", extra=_trace(event))


def _account(events: list[pb.DeliveryEvent], plan: DsnPlan, dsn_id: str) -> None:
    notice = plan.notice
    if notice is None:
        if plan.skipped not in (None, "not_ours"):
            metrics.DSNS_SKIPPED.labels(plan.skipped).inc()
        return
    metrics.DSNS.labels(plan.kind).inc()
    metrics.DSN_EVENTS.observe(len(events))
    for recipient in notice.recipients:
        kind = "expired" if recipient.expired else plan.kind
        kind = "suppressed" if recipient.suppressed else kind
        metrics.DSN_RECIPIENTS.labels(kind, recipient.result.bounce_class).inc()
    log.info(
        "DSN queued",
        extra={
            "message_id": notice.message_id,
            "queue_ids": sorted({event.queue_id for event in events})[:20],
            "dsn_id": dsn_id,
            "to": notice.mail_from,
            "kind": plan.kind,
            "recipients": len(notice.recipients),
            "events": len(events),
        },
    )
