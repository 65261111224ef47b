"""What the queue service publishes for each input — pure decisions, no I/O.

An accepted message becomes delivery jobs (batched per destination) and
local jobs, less its suppressed recipients, who get a ``suppressed`` event
instead (``suppress.py``); a deferred job goes onto the next rung of the
retry ladder, or expires into an ``expired`` event once the message is
older than its lifetime. A retry that crosses ``queue.delay_warning`` also
emits a ``delayed`` event, once per job, for the recipients whose NOTIFY
asks for delays (RFC 3461 §4.1). The service hands these outputs to the
broker port and accounts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailyard import wire
from mailyard.broker import Emit, EventKind, Output, Publish, QueueName
from mailyard.classify import BounceClass
from mailyard.events import Quoting, event_for
from mailyard.notify import Condition, wants
from mailyard.queue.schedule import (
    RETRY_SPREAD,
    Expire,
    Retry,
    after_deferral,
    delay_warning_due,
)
from mailyard.queue.split import EPOCH, ReturnPath, Split, delivery_batches, split_message
from mailyard.queue.suppress import Suppressed, suppressed_events
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

EXPIRED_REPLY = pb.SmtpReply(code=451, status="4.4.7", text="delivery time expired")
DELAYED_REPLY = pb.SmtpReply(code=451, status="4.4.0", text="not delivered yet; still trying")


@dataclass(frozen=True)
class AcceptedPlan:
    outputs: list[Output]
    splits: list[Split]  # the jobs published (suppressed recipients left out)
    batch_sizes: list[int]
    suppressed: list[list[Suppressed]] = field(default_factory=list)  # per message


NOTHING_SUPPRESSED = SuppressionState()
DEFAULT_QUOTING = Quoting()  # frozen: one shared default is safe


def plan_accepted(
    messages: Sequence[pb.AcceptedMessage],
    *,
    local_domains: Collection[str],
    max_recipients_per_job: int,
    lifetime: timedelta,
    max_jobs: int,
    max_bytes: int,
    may_repeat: bool,
    suppressions: SuppressionState = NOTHING_SUPPRESSED,
    now: datetime | None = None,
    quoting: Quoting = DEFAULT_QUOTING,
    return_path: ReturnPath | None = None,
) -> AcceptedPlan:
    """Jobs per destination; ``may_repeat`` when the input was handed over before.

    A message split again after a crash yields the same jobs with the same
    ids; marking them lets delivery skip those already delivered.
    ``suppressions`` is the list as this replica holds it, ``now`` the moment
    its entries' expiry is judged at (a snapshot: the function only reads it).
    ``return_path``: VERP on (see ``split.py``).
    """
    if suppressions and now is None:
        raise TypeError("plan_accepted needs now to judge the suppression list's expiries")
    splits = [
        split_message(
            message,
            local_domains=local_domains,
            max_recipients_per_job=max_recipients_per_job,
            lifetime=lifetime,
            suppressions=suppressions,
            now=now or EPOCH,
            return_path=return_path,
        )
        for message in messages
    ]
    suppressed = [
        suppressed_events(split.held, now=now or EPOCH, quoting=quoting) for split in splits
    ]
    if may_repeat:
        for split in splits:
            for job in split.remote + split.local:
                job.may_repeat = True
    batches = delivery_batches(
        (job for split in splits for job in split.remote), max_jobs=max_jobs, max_bytes=max_bytes
    )
    outputs: list[Output] = [Publish(QueueName.DELIVERY, tuple(batch)) for batch in batches]
    outputs += [Publish(QueueName.LOCAL, (job,)) for split in splits for job in split.local]
    outputs += [Emit(EventKind.SUPPRESSED, taken.event) for found in suppressed for taken in found]
    return AcceptedPlan(outputs, splits, [len(batch) for batch in batches], suppressed)


@dataclass(frozen=True)
class DeferralPlan:
    outputs: list[Output]
    step: Retry | Expire
    warned: int = 0  # recipients sent a delay warning


def plan_deferral(
    job: pb.DeliveryJob,
    *,
    now: datetime,
    retry_delays: Sequence[timedelta],
    quoting: Quoting,
    delay_warning: timedelta | None = None,
    may_repeat: bool = False,
) -> DeferralPlan:
    """The retry on its rung, or the expiry; ``may_repeat`` when the deferral was
    handed over before (its retry may be out already: delivery then asks the
    record of finished jobs before attempting it)."""
    step = after_deferral(
        attempts=job.attempts,
        expires_at=wire.to_datetime(job.expires_at),
        now=now,
        retry_delays=retry_delays,
    )
    if isinstance(step, Expire):
        # The last reply stays (it says why the attempts failed); the class
        # says what happened in the end.
        results = _last_results(job, EXPIRED_REPLY)
        for result in results:
            result.bounce_class = BounceClass.MESSAGE_EXPIRED.value
        event = event_for(EventKind.EXPIRED, job, results, now=now, quoting=quoting)
        return DeferralPlan([Emit(EventKind.EXPIRED, event)], step)
    retry = pb.DeliveryJob()
    retry.CopyFrom(job)
    retry.may_repeat = may_repeat
    # The earliest it can come back: jitter only shortens the wait. Counted
    # from the failed attempt's end (delivery stamps it in not_before), not
    # from now: the same deferral planned again after a crash must get the
    # same moment, or its copy's record lookup could start after the first
    # copy was recorded and miss it.
    attempted = _attempted(job, now)
    retry.not_before.CopyFrom(wire.timestamp(attempted + step.delay * (1 - RETRY_SPREAD)))
    outputs: list[Output] = [
        Publish(QueueName.DELIVERY, (retry,), delay=step.delay, spread=RETRY_SPREAD)
    ]
    due = delay_warning_due(
        received_at=wire.to_datetime(job.received_at),
        now=now,
        delay_warning=delay_warning,
        warned=job.delay_warned,
    )
    if not due:
        return DeferralPlan(outputs, step)
    retry.delay_warned = True  # decided, whoever asked: never again for this job
    if not job.mail_from:
        return DeferralPlan(outputs, step)  # a DSN itself: nobody to warn (RFC 3461 §6.2)
    warn = [r for r in _last_results(job, DELAYED_REPLY) if _wants_delay(job, r.recipient)]
    if warn:
        event = event_for(EventKind.DELAYED, job, warn, now=now, quoting=quoting)
        outputs.append(Emit(EventKind.DELAYED, event))
    return DeferralPlan(outputs, step, len(warn))


def _attempted(job: pb.DeliveryJob, now: datetime) -> datetime:
    """When the failed attempt ended, as delivery stamped it; ``now`` for a job
    without it (from a version before it) or with a stamp that cannot be right."""
    if not job.HasField("not_before"):
        return now
    try:
        return min(wire.to_datetime(job.not_before), now)  # a clock ahead: never later
    except ValueError:
        return now


def _last_results(job: pb.DeliveryJob, stand_in: pb.SmtpReply) -> list[pb.RecipientResult]:
    """Copies of the last attempt's results, or ``stand_in`` for each recipient if none."""
    return [_copy(r) for r in job.last_results] or [
        pb.RecipientResult(recipient=r, reply=stand_in) for r in job.recipients
    ]


def _wants_delay(job: pb.DeliveryJob, recipient: str) -> bool:
    if len(job.recipient_options) != len(job.recipients):
        return wants("", Condition.DELAY)  # no requests: the default
    for address, options in zip(job.recipients, job.recipient_options, strict=True):
        if address == recipient:
            return wants(options.notify, Condition.DELAY)
    return wants("", Condition.DELAY)


def _copy(result: pb.RecipientResult) -> pb.RecipientResult:
    copy = pb.RecipientResult()
    copy.CopyFrom(result)
    return copy
