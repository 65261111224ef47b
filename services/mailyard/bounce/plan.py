"""What the bounce service publishes for a group of events — pure decisions, no I/O.

The events of one message and action that the window brought together
(``window.py``) become one RFC 3464 DSN to the envelope sender (a
``suppressed`` event is a failure like ``failed`` and ``expired``: their
recipients share one "failed" DSN), queued
through ``<prefix>.inbound`` with the null sender like any other mail — or
nothing, and why: the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5: what
stops bounce loops), nobody asking (NOTIFY, RFC 3461 §4.1), or a kind that
makes no DSN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailyard import wire
from mailyard.bounce.dsn import build_dsn
from mailyard.bounce.notice import Notice, action_of, notice_of
from mailyard.broker import Output, Publish, QueueName
from mailyard.v1 import message_pb2 as pb


@dataclass(frozen=True)
class DsnPlan:
    outputs: list[Output]
    kind: str  # the action: failed | delayed | relayed ("" when not ours)
    skipped: str | None = None  # why no DSN: null_sender, not_requested, not_ours
    notice: Notice | None = None


def skip_reason(event: pb.DeliveryEvent) -> str | None:
    """Why an event on its own needs no DSN (checked before it waits for company)."""
    if action_of(event) is None:
        return "not_ours"  # only the DSN kinds are bound to us
    if not event.mail_from:
        return "null_sender"
    return None


def plan_dsn(
    events: Sequence[pb.DeliveryEvent],
    *,
    reporting_mta: str,
    dsn_id: str,
    now: datetime,
    quote_limit: int = 0,
) -> DsnPlan:
    """One DSN for ``events``: one message, one action (see ``notice.group_key``)."""
    if not events:
        return DsnPlan([], "", skipped="not_ours")
    reason = skip_reason(events[0])
    action = action_of(events[0])
    kind = action.value if action is not None else ""
    if reason is not None:
        return DsnPlan([], kind, skipped=reason)
    notice = notice_of(events)
    if notice is None:
        return DsnPlan([], kind, skipped="not_requested")
    content = build_dsn(
        notice, reporting_mta=reporting_mta, dsn_id=dsn_id, now=now, quote_limit=quote_limit
    )
    message = pb.AcceptedMessage(
        message_id=dsn_id,
        mail_from="",
        recipients=[notice.mail_from],
        content=content,
        received_at=wire.timestamp(now),
        client=pb.Client(address="", helo=reporting_mta),
        origin=pb.ORIGIN_DSN,
    )
    return DsnPlan([Publish(QueueName.INBOUND, (message,))], kind, notice=notice)
