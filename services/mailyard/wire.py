"""Protobuf messages as broker messages, whichever broker holds them.

Every stored message is an :class:`Encoded`: the serialized body, the
protobuf type's full name (``mailyard.v1.DeliveryJob``: the package names the
schema version), a stable ``message_id``, and the trace ids in headers so one
email can be followed across services (and in the RabbitMQ management UI)
without decoding bodies. The RabbitMQ adapter turns it into AMQP properties
(``broker/rabbitmq/amqp.py``); the embedded spool into columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.addresses import is_clean_mailbox
from mailyard.v1 import message_pb2 as pb

CONTENT_TYPE = "application/x-protobuf"
TRACE_MESSAGE_ID = "x-mailyard-message-id"
TRACE_QUEUE_ID = "x-mailyard-queue-id"

M = TypeVar("M", bound=Message)


class UndecodableMessage(Exception):
    """A message on a queue that is not what that queue carries."""


def type_name(message: Message | type[Message]) -> str:
    return message.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message as a broker stores it."""

    body: bytes
    type: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)  # the trace ids


def encode(message: Message, *, message_id: str, trace_id: str, queue_id: str = "") -> Encoded:
    headers: dict[str, str] = {TRACE_MESSAGE_ID: trace_id}
    if queue_id:
        headers[TRACE_QUEUE_ID] = queue_id
    return Encoded(message.SerializeToString(), type_name(message), message_id, headers)


def job_message_id(job: pb.DeliveryJob) -> str:
    """A job's message_id: stable per destination and attempt.

    It is also the job's key in the record of finished jobs: the queue
    service splits a message the same way every time, so a job split again
    after a crash has the same id as the copy that may already be delivered.
    A job put back without an attempt (``held``) is a new copy: ``/<attempts>.<held>``.
    """
    if job.held:
        return f"{job.queue_id}/{job.attempts}.{job.held}"
    return f"{job.queue_id}/{job.attempts}"


def encode_job(job: pb.DeliveryJob) -> Encoded:
    return encode(
        job, message_id=job_message_id(job), trace_id=job.message_id, queue_id=job.queue_id
    )


def encode_event(event: pb.DeliveryEvent, kind: str) -> Encoded:
    if event.kind in _REPORT_KINDS:
        # One report can name several of our addresses: one event each.
        stable = f"{event.queue_id}/{kind}/{event.results[0].recipient if event.results else ''}"
    else:
        stable = f"{event.queue_id}/{event.attempts}/{kind}"
    return encode(
        event,
        message_id=stable,
        trace_id=event.message_id,
        queue_id=event.queue_id,
    )


def batch_message_id(first_id: str, size: int) -> str:
    """A batch's AMQP message_id: its first item's, and how many follow."""
    return f"{first_id}+{size - 1}"


def encode_items(items: Sequence[Message]) -> Encoded:
    """One item as itself, several as their batch: what :func:`decode_items` reads.

    The items are all AcceptedMessage or all DeliveryJob (all of one domain);
    a DeliveryEvent travels alone.
    """
    first = items[0]
    if isinstance(first, pb.DeliveryJob):
        if len(items) == 1:
            return encode_job(first)
        return encode(
            pb.DeliveryBatch(domain=first.domain, jobs=cast(Sequence[pb.DeliveryJob], items)),
            message_id=batch_message_id(job_message_id(first), len(items)),
            trace_id=first.message_id,
            queue_id=first.queue_id,
        )
    if isinstance(first, pb.DeliveryEvent) and len(items) == 1:
        return encode_event(first, _EVENT_NAMES.get(first.kind, "event"))
    if not isinstance(first, pb.AcceptedMessage):
        raise TypeError(f"{type_name(first)} is not carried in batches")
    if len(items) == 1:
        return encode(first, message_id=first.message_id, trace_id=first.message_id)
    return encode(
        pb.AcceptedBatch(messages=cast(Sequence[pb.AcceptedMessage], items)),
        message_id=batch_message_id(first.message_id, len(items)),
        trace_id=first.message_id,
    )


# What a batch of each kind of item is, and the field that holds the items.
_BATCHES: dict[str, tuple[type[Message], str]] = {
    "mailyard.v1.AcceptedMessage": (pb.AcceptedBatch, "messages"),
    "mailyard.v1.DeliveryJob": (pb.DeliveryBatch, "jobs"),
}


def decode_items(
    body: bytes, declared_type: str | None, expected: type[M]
) -> tuple[list[M], list[tuple[M, str]]]:
    """The items an AMQP message carries: one ``expected``, or a batch of them.

    Returns the usable items, and apart from them the incomplete items of a
    batch with what each lacks, so one bad item does not hold up the others.
    A single message, or a batch that cannot be parsed at all, raises
    UndecodableMessage as :func:`decode` does. Types that are never batched
    (DeliveryEvent) are decoded as one item.
    """
    if type_name(expected) not in _BATCHES:
        return [decode(body, declared_type, expected)], []
    batch_type, items_field = _BATCHES[type_name(expected)]
    if declared_type != type_name(batch_type):
        if declared_type != type_name(expected):
            raise UndecodableMessage(
                f"type property is {declared_type!r}, this queue carries "
                f"{type_name(expected)!r} or {type_name(batch_type)!r}"
            )
        return [decode(body, declared_type, expected)], []
    batch = batch_type()
    try:
        batch.ParseFromString(body)
    except DecodeError as exc:
        raise UndecodableMessage(f"not a valid {type_name(batch_type)}: {exc}") from exc
    items: list[M] = list(getattr(batch, items_field))
    if not items:
        raise UndecodableMessage(f"empty {type_name(batch_type)}")
    usable: list[M] = []
    rejected: list[tuple[M, str]] = []
    for item in items:
        problem = _missing_fields(item)
        if problem:
            rejected.append((item, f"incomplete {type_name(expected)} in a batch: {problem}"))
        else:
            usable.append(item)
    return usable, rejected


def decode(body: bytes, declared_type: str | None, expected: type[M]) -> M:
    """Parse ``body`` as ``expected`` and check it is complete, or raise UndecodableMessage."""
    if declared_type != type_name(expected):
        raise UndecodableMessage(
            f"type property is {declared_type!r}, this queue carries {type_name(expected)!r}"
        )
    message = expected()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise UndecodableMessage(f"not a valid {type_name(expected)}: {exc}") from exc
    problem = _missing_fields(message)
    if problem:
        raise UndecodableMessage(f"incomplete {type_name(expected)}: {problem}")
    return message


def _missing_fields(message: Message) -> str | None:
    """What a decoded message lacks to be usable (protobuf parses almost anything)."""
    problem = _unsafe_addresses(message)
    if problem:
        return problem
    if isinstance(message, pb.AcceptedMessage):
        if not message.message_id:
            return "no message_id"
        if not message.recipients:
            return "no recipients"
        if not message.content:
            return "no content"
    elif isinstance(message, pb.DeliveryJob):
        if not message.queue_id or not message.message_id:
            return "no queue_id or message_id"
        if not message.domain:
            return "no domain"
        if not message.recipients:
            return "no recipients"
        if not message.HasField("expires_at"):
            return "no expires_at"
    elif isinstance(message, pb.DeliveryEvent):
        if message.kind == pb.EVENT_KIND_UNSPECIFIED:
            return "no kind"
        if not message.results:
            return "no results"
    return None


def _unsafe_addresses(message: Message) -> str | None:
    addresses: list[str] = []
    if isinstance(message, pb.AcceptedMessage):
        addresses = list(message.recipients)
    elif isinstance(message, pb.DeliveryJob):
        addresses = [*message.recipients, *([message.return_path] if message.return_path else [])]
    elif isinstance(message, pb.DeliveryEvent):
        addresses = [result.recipient for result in message.results]
    sender = getattr(message, "mail_from", "")
    for address in [sender, *addresses] if sender else addresses:
        if not is_clean_mailbox(address):
            return f"unsafe address {address[:100]!r}"
    return None


_EVENT_NAMES = {
    pb.EVENT_KIND_DELIVERED: "delivered",
    pb.EVENT_KIND_DEFERRED: "deferred",
    pb.EVENT_KIND_FAILED: "failed",
    pb.EVENT_KIND_EXPIRED: "expired",
    pb.EVENT_KIND_BOUNCED: "bounced",
    pb.EVENT_KIND_COMPLAINED: "complained",
    pb.EVENT_KIND_SUPPRESSED: "suppressed",
}
# Asynchronous reports (bounce service); their trace is the report's.
_REPORT_KINDS = frozenset({pb.EVENT_KIND_BOUNCED, pb.EVENT_KIND_COMPLAINED})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a Timestamp (integer arithmetic; FromDatetime is slow)."""
    delta = moment - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def later(stamp: Timestamp, delay: timedelta) -> Timestamp:
    """``stamp + delay``, in whole microseconds."""
    micros = stamp.seconds * 1_000_000 + stamp.nanos // 1000 + round(delay.total_seconds() * 1e6)
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def to_datetime(stamp: Timestamp) -> datetime:
    # Timestamp.ToDatetime is Python arithmetic on timedeltas; this is C, and
    # exact to the microsecond like it (several calls a job showed in profiles).
    return datetime.fromtimestamp(stamp.seconds, UTC).replace(microsecond=stamp.nanos // 1000)
