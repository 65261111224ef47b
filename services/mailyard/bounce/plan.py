"""What the bounce service publishes for a failure — pure decisions, no I/O.

A ``failed``, ``expired`` or ``suppressed`` event becomes an RFC 3464 DSN to
the envelope sender, queued through ``<prefix>.inbound`` with the null sender
like any other mail; never one to the null sender (RFC 3461 §6.2, RFC 5321
§4.5.5), which is what stops bounce loops. A suppressed recipient is left out
of the DSN when the client asked for no failure notice (RFC 3461 §4.1:
``NOTIFY=NEVER``, or a list without ``FAILURE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailyard import wire
from mailyard.bounce.dsn import build_dsn
from mailyard.broker import Output, Publish, QueueName
from mailyard.v1 import message_pb2 as pb

KIND_NAMES = {
    pb.EVENT_KIND_FAILED: "failed",
    pb.EVENT_KIND_EXPIRED: "expired",
    pb.EVENT_KIND_SUPPRESSED: "suppressed",
}


@dataclass(frozen=True)
class DsnPlan:
    outputs: list[Output]
    kind: str  # failed | expired | suppressed
    skipped: str | None = None  # why no DSN: null_sender, notify, not_ours
    reported: Sequence[pb.RecipientResult] = ()  # the recipients the DSN names


def plan_dsn(event: pb.DeliveryEvent, *, reporting_mta: str, dsn_id: str, now: datetime) -> DsnPlan:
    kind = KIND_NAMES.get(event.kind)
    if kind is None:
        return DsnPlan([], "", skipped="not_ours")  # only these kinds are bound to us
    if not event.mail_from:
        return DsnPlan([], kind, skipped="null_sender")
    if event.kind == pb.EVENT_KIND_SUPPRESSED:
        event = _wanting_notice(event)
        if not event.results:
            return DsnPlan([], kind, skipped="notify")
    content = build_dsn(event, reporting_mta=reporting_mta, dsn_id=dsn_id, now=now)
    notice = pb.AcceptedMessage(
        message_id=dsn_id,
        mail_from="",
        recipients=[event.mail_from],
        content=content,
        received_at=wire.timestamp(now),
        client=pb.Client(address="", helo=reporting_mta),
        origin=pb.ORIGIN_DSN,
    )
    return DsnPlan([Publish(QueueName.INBOUND, (notice,))], kind, reported=event.results)


def wants_failure_notice(notify: str) -> bool:
    """RFC 3461 §4.1: no NOTIFY means failures (and delays) are reported."""
    return not notify or "FAILURE" in notify.upper().split(",")


def _wanting_notice(event: pb.DeliveryEvent) -> pb.DeliveryEvent:
    """``event`` with only the recipients whose client wants a failure notice."""
    options = list(event.recipient_options)
    if len(options) != len(event.results):
        return event  # no options (or not one per result): the default, a notice
    keep = [i for i, option in enumerate(options) if wants_failure_notice(option.notify)]
    if len(keep) == len(options):
        return event
    copy = pb.DeliveryEvent()
    copy.CopyFrom(event)
    del copy.results[:]
    del copy.recipient_options[:]
    copy.results.extend(event.results[i] for i in keep)
    copy.recipient_options.extend(options[i] for i in keep)
    return copy
