"""What the queue service publishes for each input — pure decisions, no I/O.

An accepted message becomes delivery jobs (batched per destination) and
local jobs, less its suppressed recipients, who get a ``suppressed`` event
instead (``suppress.py``); a deferred job goes onto the next rung of the
retry ladder, or expires into an ``expired`` event once the message is
older than its lifetime. The service hands these outputs to the broker port and accounts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailyard import wire
from mailyard.broker import Emit, EventKind, Output, Publish, QueueName
from mailyard.classify import BounceClass
from mailyard.events import event_for
from mailyard.queue.schedule import Expire, Retry, after_deferral
from mailyard.queue.split import EPOCH, ReturnPath, Split, delivery_batches, split_message
from mailyard.queue.suppress import Suppressed, suppressed_events
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

EXPIRED_REPLY = pb.SmtpReply(code=451, status="4.4.7", text="delivery time expired")


@dataclass(frozen=True)
class AcceptedPlan:
    outputs: list[Output]
    splits: list[Split]  # the jobs published (suppressed recipients left out)
    batch_sizes: list[int]
    suppressed: list[list[Suppressed]] = field(default_factory=list)  # per message


NOTHING_SUPPRESSED = SuppressionState()


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
    quote_limit: int = 65536,
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
        suppressed_events(split.held, now=now or EPOCH, quote_limit=quote_limit) for split in splits
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


def plan_deferral(
    job: pb.DeliveryJob,
    *,
    now: datetime,
    retry_delays: Sequence[timedelta],
    quote_limit: int,
) -> tuple[list[Output], Retry | Expire]:
    step = after_deferral(
        attempts=job.attempts,
        expires_at=wire.to_datetime(job.expires_at),
        now=now,
        retry_delays=retry_delays,
    )
    if isinstance(step, Expire):
        # The last reply stays (it says why the attempts failed); the class
        # says what happened in the end.
        results = [_copy(r) for r in job.last_results] or [
            pb.RecipientResult(recipient=r, reply=EXPIRED_REPLY) for r in job.recipients
        ]
        for result in results:
            result.bounce_class = BounceClass.MESSAGE_EXPIRED.value
        event = event_for(EventKind.EXPIRED, job, results, now=now, quote_limit=quote_limit)
        return [Emit(EventKind.EXPIRED, event)], step
    retry = pb.DeliveryJob()
    retry.CopyFrom(job)
    retry.not_before.CopyFrom(wire.timestamp(now + step.delay))
    return [Publish(QueueName.DELIVERY, (retry,), delay=step.delay)], step


def _copy(result: pb.RecipientResult) -> pb.RecipientResult:
    copy = pb.RecipientResult()
    copy.CopyFrom(result)
    return copy
