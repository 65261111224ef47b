"""What consuming a work queue means, whichever adapter delivers the messages.

The adapter hands each broker message over as :class:`Incoming` and carries
out what this module decides through its :class:`Settlement`. For one
message:

- the body is not what the queue carries → parked at once with the reason;
- a batch has incomplete items → those are parked one by one and the good
  ones queued again as a new message, so a bad item is parked once however
  often the rest is retried;
- it came before (redelivered) or its items say they may repeat → items the
  record of finished work already holds are left out;
- the handler returns its outputs → stored, then the input is released;
- the handler raises → the input is tried again after a pause; on the last
  delivery allowed, parked with the error instead (a batch item by item
  first, so that only the items that fail are parked);
- the process dies → the adapter redelivers, and past ``delivery_limit``
  deliveries parks the message itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from mailyard import wire
from mailyard.broker import metrics, records
from mailyard.broker.port import Handler, Output, Publish, PublishError, Work
from mailyard.broker.topology import QueueName
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

PARK_REASON = "x-mailyard-park-reason"
PARKED_FROM = "x-mailyard-parked-from"
PARKED_BY = "x-mailyard-parked-by"
PARKED_AT = "x-mailyard-parked-at"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One broker message as the adapter received it."""

    body: bytes
    type_name: str | None
    message_id: str | None
    headers: Mapping[str, Any]
    redelivered: bool
    delivery_count: int  # deliveries before this one
    handle: object = None  # the adapter's own (an AMQP message, a spool row)


@dataclass(frozen=True, slots=True)
class Parked:
    """A message (or one item of a batch) on its way to the parking queue."""

    body: bytes
    type_name: str | None
    message_id: str | None
    headers: dict[str, Any]
    reason: str
    label: str  # bounded metric label: undecodable, handler_error, delivery_limit


class Settlement(Protocol):
    """What the adapter does with a message once the consumer has decided."""

    async def release(
        self, incoming: Incoming, outputs: Sequence[Output], parked: Sequence[Parked]
    ) -> str:
        """Store ``outputs`` and ``parked`` durably, then let go of the input.

        Raises PublishError (the input is kept) when they cannot be stored;
        returns ``"acked"``, or ``"lost_channel"`` when the input could not
        be let go of (the broker will deliver it again).
        """

    async def retry_later(self, incoming: Incoming) -> str:
        """Give the input back for another try after a pause; ``"requeued"`` or
        ``"lost_channel"``."""

    async def complete(
        self, incoming: Incoming, key: str, outputs: Sequence[Output]
    ) -> asyncio.Future[None]:
        """Store ``outputs``, and the record that the item ``key`` is done.

        Returns once the outputs are durable, with a future that resolves
        once the record is (or fails if it cannot be).
        """

    async def finished(self, keys: Collection[str], since: datetime) -> set[str]:
        """Which of ``keys`` the record of finished work holds (recorded after ``since``)."""


@dataclass
class ConsumerCore(Generic[M]):
    service: str
    queue: QueueName
    queue_name: str  # with the prefix, for headers and logs
    schema: type[M]
    handler: Handler[M]
    settlement: Settlement
    delivery_limit: int
    # The metrics' queue label: the name without the prefix ("delivery.bulk"
    # for a lane); the role's name when not given.
    role: str = ""
    _consumed: dict[str, Any] = field(init=False)
    _handle_seconds: Any = field(init=False)

    def __post_init__(self) -> None:
        role = self.role = self.role or self.queue.value
        for reason in ("undecodable", "handler_error", "delivery_limit"):
            metrics.PARKED.labels(self.service, role, reason)  # zero series from the start
        metrics.SKIPPED_FINISHED.labels(self.service, role)
        # Bound once: looking up labelled children per message shows in profiles.
        self._handle_seconds = metrics.HANDLE_SECONDS.labels(self.service, role)
        self._consumed = {
            outcome: metrics.CONSUMED.labels(self.service, role, outcome)
            for outcome in ("acked", "requeued", "lost_channel")
        }

    async def run(self, incoming: Incoming) -> None:
        started = time.perf_counter()
        clearing: list[asyncio.Future[None]] = []
        try:
            outcome = await self._run(incoming, clearing)
        finally:
            # The input is settled (or never will be by us): a redelivery can
            # no longer repeat an item completed without its record.
            for cleared in clearing:
                if not cleared.done():
                    cleared.set_result(None)
        self._consumed[outcome].inc()
        self._handle_seconds.observe(time.perf_counter() - started)

    async def _run(self, incoming: Incoming, clearing: list[asyncio.Future[None]]) -> str:
        try:
            return await self._process(incoming, clearing)
        except PublishError as exc:
            # Outputs or parked copies could not be stored: keep the input.
            log.warning(
                "could not store what a message produced; trying it again later",
                extra={"queue": self.queue_name, "error": str(exc)},
            )
            return await self.settlement.retry_later(incoming)
        except Exception as exc:
            # Not the handler: a message that breaks the consumer itself. It
            # must neither stay unsettled forever nor loop without end.
            self._log_failure(incoming, exc)
            if incoming.delivery_count + 1 < self.delivery_limit:
                return await self.settlement.retry_later(incoming)
            try:
                return await self._park_whole(
                    incoming, f"consumer kept failing: {exc!r}", "handler_error"
                )
            except PublishError:
                return await self.settlement.retry_later(incoming)

    async def _process(self, incoming: Incoming, clearing: list[asyncio.Future[None]]) -> str:
        if incoming.delivery_count >= self.delivery_limit:
            reason = (
                f"delivered {incoming.delivery_count} times without being finished "
                "(the consumer kept dying on it?)"
            )
            return await self._park_whole(incoming, reason, "delivery_limit")
        try:
            items, rejected = wire.decode_items(incoming.body, incoming.type_name, self.schema)
        except wire.UndecodableMessage as exc:
            return await self._park_whole(incoming, f"undecodable: {exc}", "undecodable")
        if rejected:
            return await self._set_apart(incoming, items, rejected)
        if records.needs_lookup(items, redelivered=incoming.redelivered):
            items = await self._unfinished(items)
            if not items:
                return await self.settlement.release(incoming, [], [])
        completed: set[str] = set()
        work = self._work(incoming, items, completed, clearing)
        try:
            outputs = await self.handler(work)
        except PublishError:
            raise
        except Exception as exc:
            self._log_failure(incoming, exc)
            if incoming.delivery_count + 1 < self.delivery_limit:
                return await self.settlement.retry_later(incoming)
            return await self._last_chance(incoming, items, completed, clearing, exc)
        outcome = await self.settlement.release(incoming, outputs, [])
        _account(work)
        return outcome

    def _work(
        self,
        incoming: Incoming,
        items: list[M],
        completed: set[str],
        clearing: list[asyncio.Future[None]],
    ) -> Work[M]:
        async def complete(item: M, outputs: Sequence[Output]) -> asyncio.Future[None]:
            key = records.key_of(item)
            if key is None:
                raise TypeError(f"{wire.type_name(item)} items cannot be completed one by one")
            recorded = await self.settlement.complete(incoming, key, outputs)
            completed.add(key)
            if recorded.done():
                return recorded
            # Cleared by whichever comes first: the record, or the input's
            # release (which run() answers for).
            cleared = asyncio.get_running_loop().create_future()
            recorded.add_done_callback(functools.partial(_clear_on_record, cleared))
            clearing.append(cleared)
            return cleared

        keyed = bool(items) and records.key_of(items[0]) is not None
        return Work(
            items,
            redelivered=incoming.redelivered,
            delivery_count=incoming.delivery_count,
            complete=complete if keyed else None,
        )

    async def _unfinished(self, items: list[M]) -> list[M]:
        keys = {key for item in items if (key := records.key_of(item)) is not None}
        finished = await self.settlement.finished(keys, records.search_from(items))
        if finished:
            metrics.SKIPPED_FINISHED.labels(self.service, self.role).inc(len(finished))
            log.info(
                "left out items already finished before a redelivery",
                extra={"queue": self.queue_name, "finished": sorted(finished)[:20]},
            )
        return [item for item in items if records.key_of(item) not in finished]

    async def _last_chance(
        self,
        incoming: Incoming,
        items: list[M],
        completed: set[str],
        clearing: list[asyncio.Future[None]],
        error: Exception,
    ) -> str:
        """The last delivery allowed: items one by one, parking only those that fail."""
        outputs: list[Output] = []
        parked: list[Parked] = []
        done: list[Work[M]] = []
        for item in items:
            if records.key_of(item) in completed:
                continue
            if len(items) == 1:
                failure: Exception = error
            else:
                try:
                    work = self._work(incoming, [item], completed, clearing)
                    outputs.extend(await self.handler(work))
                    done.append(work)
                    continue
                except PublishError:
                    raise
                except Exception as exc:
                    failure = exc
            parked.append(self._parked_item(incoming, item, f"handler kept failing: {failure!r}"))
        outcome = await self._release_parked(incoming, outputs, parked)
        for work in done:
            _account(work)
        return outcome

    async def _park_whole(self, incoming: Incoming, reason: str, label: str) -> str:
        parked = Parked(
            incoming.body,
            incoming.type_name,
            incoming.message_id,
            self._park_headers(incoming, reason, {}),
            reason,
            label,
        )
        return await self._release_parked(incoming, [], [parked])

    async def _set_apart(
        self, incoming: Incoming, items: list[M], rejected: list[tuple[M, str]]
    ) -> str:
        """Park a batch's incomplete items; queue the rest again as a new message."""
        parked = [
            self._parked_item(incoming, item, f"undecodable: {reason}", "undecodable")
            for item, reason in rejected
        ]
        outputs: list[Output] = [Publish(self.queue, tuple(items))] if items else []
        return await self._release_parked(incoming, outputs, parked)

    async def _release_parked(
        self, incoming: Incoming, outputs: Sequence[Output], parked: list[Parked]
    ) -> str:
        outcome = await self.settlement.release(incoming, outputs, parked)
        for entry in parked:
            metrics.PARKED.labels(self.service, self.role, entry.label).inc()
            log.error(
                "parked a message",
                extra={
                    "queue": self.queue_name,
                    "reason": entry.reason,
                    "message_id": entry.message_id,
                },
            )
        return outcome

    def _parked_item(
        self, incoming: Incoming, item: M, reason: str, label: str = "handler_error"
    ) -> Parked:
        return Parked(
            item.SerializeToString(),
            wire.type_name(item),
            _item_id(item) or incoming.message_id,
            self._park_headers(incoming, reason, _item_trace(item)),
            reason,
            label,
        )

    def _park_headers(
        self, incoming: Incoming, reason: str, trace: dict[str, str]
    ) -> dict[str, Any]:
        return {
            **incoming.headers,
            **trace,
            PARK_REASON: reason[:1000],
            PARKED_FROM: self.queue_name,
            PARKED_BY: self.service,
            PARKED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _log_failure(self, incoming: Incoming, exc: Exception) -> None:
        log.warning(
            "handler failed",
            exc_info=exc,
            extra={
                "queue": self.queue_name,
                "message_id": incoming.message_id,
                "delivery_count": incoming.delivery_count,
                "error": repr(exc),
            },
        )


def _clear_on_record(cleared: asyncio.Future[None], recorded: asyncio.Future[None]) -> None:
    # A record that failed clears it too (the adapter says so): the broker is
    # gone, so is the batch's ack, and waiting could only hold a slot that the
    # batch's other jobs may need.
    if not cleared.done():
        cleared.set_result(None)


def _account(work: Work[Any]) -> None:
    for account in work.after_release:
        try:
            account()
        except Exception:
            log.exception("accounting after a release failed")


def _item_id(item: Message) -> str | None:
    """The message_id the item would have had on its own."""
    if isinstance(item, pb.DeliveryJob):
        return wire.job_message_id(item)
    return getattr(item, "message_id", None) or None


def _item_trace(item: Message) -> dict[str, str]:
    """The trace headers of the item itself, not of the batch it came in."""
    trace = {wire.TRACE_MESSAGE_ID: getattr(item, "message_id", "")}
    queue_id = getattr(item, "queue_id", "")
    if queue_id:
        trace[wire.TRACE_QUEUE_ID] = queue_id
    return trace
