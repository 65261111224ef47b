"""What the bounce service publishes for a failure — pure decisions, no I/O.

A ``failed`` or ``expired`` event becomes an RFC 3464 DSN to the envelope
sender, queued through ``<prefix>.inbound`` with the null sender like any
other mail; never one to the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5),
which is what stops bounce loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailyard import wire
from mailyard.bounce.dsn import build_dsn
from mailyard.broker import Output, Publish, QueueName
from mailyard.v1 import message_pb2 as pb

KIND_NAMES = {pb.EVENT_KIND_FAILED: "failed", pb.EVENT_KIND_EXPIRED: "expired"}


@dataclass(frozen=True)
class DsnPlan:
    outputs: list[Output]
    kind: str  # failed | expired
    skipped: str | None = None  # why no DSN: null_sender, not_ours


def plan_dsn(event: pb.DeliveryEvent, *, reporting_mta: str, dsn_id: str, now: datetime) -> DsnPlan:
    kind = KIND_NAMES.get(event.kind)
    if kind is None:
        return DsnPlan([], "", skipped="not_ours")  # only failed/expired are bound to us
    if not event.mail_from:
        return DsnPlan([], kind, skipped="null_sender")
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
    return DsnPlan([Publish(QueueName.INBOUND, (notice,))], kind)
