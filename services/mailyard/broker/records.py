"""Which items the record of finished work knows, and from when to search it.

Only delivery jobs are recorded: a job's key is its message id
(``<queue_id>/<attempts>``), the same for a copy split again from the same
accepted message. An item needs the record when the broker says it came
before (a crash, a requeue) or when the queue service marked it
``may_repeat``; anything else is new and is not looked up, so the record
costs nothing in the common case.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message

from mailyard import wire
from mailyard.v1 import message_pb2 as pb


def key_of(item: Message) -> str | None:
    if isinstance(item, pb.DeliveryJob):
        return wire.job_message_id(item)
    return None


def needs_lookup(items: Sequence[Message], *, redelivered: bool) -> bool:
    if not items or key_of(items[0]) is None:
        return False
    return redelivered or any(getattr(item, "may_repeat", False) for item in items)


def search_from(items: Sequence[Message]) -> datetime:
    """The earliest moment a finished copy of any of ``items`` can have been recorded.

    A job's attempt cannot start before its ``not_before`` (acceptance for a
    first attempt, the end of the wait for a retry, counted from the failed
    attempt's end so that a copy planned again has the same); jobs written
    before that field existed fall back to the time the message was accepted.
    """
    moments = []
    for item in items:
        if isinstance(item, pb.DeliveryJob):
            stamp = item.not_before if item.HasField("not_before") else item.received_at
            try:
                moments.append(wire.to_datetime(stamp))
            except ValueError:  # out of range: search from the start, never miss
                return BEGINNING
    return min(moments) if moments else BEGINNING


BEGINNING = datetime.fromtimestamp(0, UTC)
