"""What delivery publishes after an attempt — pure decisions, no I/O.

One event per outcome kind that occurred (its recipients' results in it;
``delivered`` and ``deferred`` only while someone takes them: at full speed,
building an event that goes nowhere showed in the profile), and for deferred
recipients the job again, one attempt further and with their last replies,
for the queue service to schedule or expire. Deferred and failed
recipients carry their bounce class (``mailyard/classify.py``).

A delivered recipient that asked ``NOTIFY=SUCCESS`` of a server without DSN
also gets a ``relayed`` event, which the bounce service answers (RFC 3461
§5.2.2, RFC 3464 §2.3.3 "relayed"); when the server offered DSN, the request
went on to it and is its to answer, as Postfix does. Only those recipients
cost an extra event: ``delivered`` itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from mailyard import wire
from mailyard.broker import HOLD_DELAYS, Emit, EventKind, Output, Publish, QueueName
from mailyard.classify import Classifier, default_classifier
from mailyard.delivery.outcome import EVENT_KINDS, Outcome, RecipientOutcome
from mailyard.events import Quoting, event_for
from mailyard.notify import Condition, wants
from mailyard.v1 import message_pb2 as pb

OUTCOMES = tuple(Outcome)  # iterating the enum class itself costs, per job


def by_outcome(outcomes: Sequence[RecipientOutcome]) -> dict[Outcome, list[RecipientOutcome]]:
    grouped: dict[Outcome, list[RecipientOutcome]] = {o: [] for o in OUTCOMES}
    for outcome in outcomes:
        grouped[outcome.outcome].append(outcome)
    return grouped


def plan_report(
    job: pb.DeliveryJob,
    outcomes: Sequence[RecipientOutcome],
    *,
    now: datetime,
    quoting: Quoting,
    classifier: Classifier | None = None,
    hears: Callable[[EventKind], bool] = lambda kind: True,
) -> list[Output]:
    """``classifier``: what gives each deferred and failed recipient its bounce class;
    ``hears``: whether anyone takes events of a kind now (the port's ``hears``):
    an event nobody takes is not built."""
    classify = (classifier or default_classifier()).classify
    attempts = job.attempts + 1
    outputs: list[Output] = []
    for outcome, group in by_outcome(outcomes).items():
        if not group:
            continue
        kind = EVENT_KINDS[outcome]
        heard = hears(kind)
        if outcome is Outcome.DELIVERED:
            if not heard and not job.recipient_options:
                continue  # no event, and nobody asked for a notice of success
            results = [o.to_pb() for o in group]
        else:
            results = [o.to_pb(classify(o.reply)) for o in group]
        if heard:
            event = event_for(kind, job, results, now=now, attempts=attempts, quoting=quoting)
            outputs.append(Emit(kind, event))
        if outcome is Outcome.DELIVERED and (relayed := success_to_report(job, results)):
            notice = event_for(
                EventKind.RELAYED, job, relayed, now=now, attempts=attempts, quoting=quoting
            )
            outputs.append(Emit(EventKind.RELAYED, notice))
        if outcome is Outcome.DEFERRED:
            outputs.append(Publish(QueueName.DEFERRED, (_again(job, attempts, results, now),)))
    return outputs


def success_to_report(
    job: pb.DeliveryJob, delivered: Sequence[pb.RecipientResult]
) -> list[pb.RecipientResult]:
    """Delivered recipients whose NOTIFY=SUCCESS is ours to answer: the next hop lacked DSN."""
    if not job.recipient_options:
        return []  # the common case: nobody asked
    requests = recipient_options(job)
    return [
        result
        for result in delivered
        if not result.next_hop_dsn
        and wants(requests.get(result.recipient, _NONE).notify, Condition.SUCCESS)
    ]


_NONE = pb.RecipientOptions()


def _again(
    job: pb.DeliveryJob, attempts: int, results: list[pb.RecipientResult], now: datetime
) -> pb.DeliveryJob:
    """The job for its deferred recipients, one attempt further (the one copy of the body).

    ``not_before`` is the end of this attempt: the next one cannot start
    earlier, and the queue counts the retry's wait from it, so that a
    deferral it plans twice (a crash before its ack) gets one ``not_before``
    and the second copy's record lookup starts early enough (records.py).
    """
    retry = pb.DeliveryJob()
    retry.CopyFrom(job)
    retry.attempts = attempts
    retry.may_repeat = False
    retry.not_before.CopyFrom(wire.timestamp(now))
    del retry.recipients[:]
    retry.recipients.extend(r.recipient for r in results)
    options = recipient_options(job)
    del retry.recipient_options[:]
    if job.recipient_options:
        retry.recipient_options.extend(options[r.recipient] for r in results)
    del retry.last_results[:]
    retry.last_results.extend(results)
    return retry


def recipient_options(job: pb.DeliveryJob) -> dict[str, pb.RecipientOptions]:
    """Each recipient's DSN options (the defaults when the job has none)."""
    if len(job.recipient_options) != len(job.recipients):
        return {r: pb.RecipientOptions() for r in job.recipients}
    return dict(zip(job.recipients, job.recipient_options, strict=True))


# Put-back jobs: jitter as for retries, and the earliest they can return.
HOLD_SPREAD = 0.2


def plan_hold(job: pb.DeliveryJob, *, reason: str, pause_left: float, now: datetime) -> Publish:
    """The job again, in the retry ladder, not one attempt further (delivery/gate.py).

    A paused destination's jobs wait about as long as the pause has left. The
    others (a busy destination) wait the shortest rung the first time, when
    the waiting room they found full is about half drained, and the next
    rung after that, so that a large backlog does not circle the broker.
    """
    if reason == "paused":
        fitting = [d for d in HOLD_DELAYS if d.total_seconds() <= pause_left]
        delay = fitting[-1] if fitting else HOLD_DELAYS[0]
    else:
        delay = HOLD_DELAYS[min(job.held, 1)]
    again = pb.DeliveryJob()
    again.CopyFrom(job)
    again.held = job.held + 1
    again.may_repeat = False
    again.not_before.CopyFrom(wire.timestamp(now + delay * (1 - HOLD_SPREAD)))
    return Publish(QueueName.DELIVERY, (again,), delay=delay, spread=HOLD_SPREAD)
