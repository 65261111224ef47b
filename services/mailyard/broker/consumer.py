"""Consuming a work queue: decode, hand to the service, ack only on success.

The handler returns only after everything it produced is confirmed by the
broker; then the input is acked. What can go wrong, and what happens:

- the body is not what the queue carries → parked at once with the reason;
- the handler raises → requeued after a pause; on the last delivery the
  broker allows, parked with the error as reason instead;
- the process dies → the broker redelivers (and after ``delivery_limit``
  deliveries dead-letters the message to the parking queue itself);
- the connection drops mid-handling → the ack fails, the broker redelivers.

:class:`BatchConsumer` reads queues whose messages may carry a batch of
items. Its handler gets the whole list; an incomplete item is parked on its
own, and when a batch keeps failing its items are tried one by one on the
last delivery, so only the items that fail are parked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from google.protobuf.message import Message

from mailyard import wire
from mailyard.broker import metrics
from mailyard.broker.client import BrokerClient, PublishError
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
P = TypeVar("P")

PARK_REASON = "x-mailyard-park-reason"
PARKED_FROM = "x-mailyard-parked-from"
PARKED_BY = "x-mailyard-parked-by"
PARKED_AT = "x-mailyard-parked-at"


@dataclass(frozen=True, slots=True)
class Delivery(Generic[P]):
    """A decoded message and what the broker says about its history."""

    payload: P
    redelivered: bool
    delivery_count: int


Handler = Callable[[Delivery[P]], Awaitable[None]]


class QueueConsumer(Generic[M]):
    """What every consumer does: subscribe, settle, park, stop; subclasses process."""

    def __init__(
        self,
        client: BrokerClient,
        queue: str,
        schema: type[M],
        *,
        prefetch: int,
        retry_pause: float = 1.0,
    ) -> None:
        self.client = client
        self.queue_name = queue
        self.role = queue.removeprefix(client.topology.prefix + ".")
        self.schema = schema
        self.prefetch = prefetch
        self.retry_pause = retry_pause
        self._channel: AbstractChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        for reason in ("undecodable", "handler_error"):  # zero series from the start
            metrics.PARKED.labels(client.service, self.role, reason)
        # Bound once: looking up labelled children per message shows in profiles.
        self._handle_seconds = metrics.HANDLE_SECONDS.labels(client.service, self.role)
        self._consumed = {
            outcome: metrics.CONSUMED.labels(client.service, self.role, outcome)
            for outcome in ("acked", "requeued", "lost_channel")
        }

    async def start(self) -> None:
        self._channel = await self.client.channel(prefetch=self.prefetch)
        self._queue = await self._channel.get_queue(self.queue_name)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace: float) -> None:
        """Stop taking messages, let in-flight ones finish (up to ``grace`` s)."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # a dead channel has nothing left to cancel
                log.debug("cancel on %s failed: %r", self.queue_name, exc)
            self._tag = None
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace)
            if pending:
                log.warning(
                    "stopping with unfinished work; the broker will redeliver it",
                    extra={"queue": self.queue_name, "unfinished": len(pending)},
                )
                for task in pending:
                    task.cancel()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None  # aio-pika runs each delivery in its own task
        self._in_flight.add(task)
        started = time.perf_counter()
        try:
            await self._process(message)
        finally:
            self._in_flight.discard(task)
            self._handle_seconds.observe(time.perf_counter() - started)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    def _log_failure(self, message: AbstractIncomingMessage, count: int, exc: Exception) -> None:
        log.warning(
            "handler failed",
            exc_info=not isinstance(exc, PublishError),
            extra={
                "queue": self.queue_name,
                "message_id": message.message_id,
                "delivery_count": count,
                "error": repr(exc),
            },
        )

    async def _requeue_later(self, message: AbstractIncomingMessage) -> None:
        await asyncio.sleep(self.retry_pause)
        await self._settle(message, requeue=True)

    async def _settle(self, message: AbstractIncomingMessage, *, requeue: bool | None) -> None:
        """Ack (requeue=None) or nack; a dead channel means the broker redelivers."""
        try:
            if requeue is None:
                await message.ack()
            else:
                await message.nack(requeue=requeue)
        except Exception as exc:
            log.info(
                "could not settle a delivery; the broker will redeliver it",
                extra={"queue": self.queue_name, "error": repr(exc)},
            )
            outcome = "lost_channel"
        else:
            outcome = "acked" if requeue is None else "requeued"
        self._consumed[outcome].inc()

    async def _park(self, message: AbstractIncomingMessage, reason: str, label: str) -> None:
        if await self._publish_parked(
            message, message.body, message.type, message.message_id, reason, label
        ):
            await self._settle(message, requeue=None)
        else:
            await self._requeue_later(message)

    async def _publish_parked(
        self,
        message: AbstractIncomingMessage,
        body: bytes,
        type_name: str | None,
        message_id: str | None,
        reason: str,
        label: str,
        trace: dict[str, str] | None = None,
    ) -> bool:
        """Store ``body`` (all of ``message``, or one item of it) on the parking queue."""
        headers = dict(message.headers or {})
        headers.update(trace or {})
        headers.update(
            {
                PARK_REASON: reason[:1000],
                PARKED_FROM: self.queue_name,
                PARKED_BY: self.client.service,
                PARKED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        parked = aio_pika.Message(
            body,
            headers=headers,
            content_type=message.content_type,
            type=type_name,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self.client.publish(self.client.topology.parking, parked)
        except PublishError as exc:
            log.warning("could not park a message; requeueing it", extra={"error": str(exc)})
            return False
        log.error(
            "parked a message",
            extra={"queue": self.queue_name, "reason": reason, "message_id": message_id},
        )
        metrics.PARKED.labels(self.client.service, self.role, label).inc()
        return True


class Consumer(QueueConsumer[M]):
    """Consumes a queue of single ``schema`` messages."""

    def __init__(
        self,
        client: BrokerClient,
        queue: str,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        retry_pause: float = 1.0,
    ) -> None:
        super().__init__(client, queue, schema, prefetch=prefetch, retry_pause=retry_pause)
        self.handler = handler

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            payload = wire.decode(message.body, message.type, self.schema)
        except wire.UndecodableMessage as exc:
            await self._park(message, f"undecodable: {exc}", "undecodable")
            return
        count = _delivery_count(message)
        try:
            await self.handler(Delivery(payload, bool(message.redelivered), count))
        except Exception as exc:
            self._log_failure(message, count, exc)
            if count + 1 >= self.client.config.delivery_limit:
                await self._park(message, f"handler kept failing: {exc!r}", "handler_error")
            else:
                await self._requeue_later(message)
            return
        await self._settle(message, requeue=None)


class BatchConsumer(QueueConsumer[M]):
    """Consumes a queue whose messages carry one ``schema`` item or a batch of them.

    The handler gets ``Delivery[list[M]]`` and returns once everything it
    produced for every item is confirmed; then the batch is acked as one.
    """

    def __init__(
        self,
        client: BrokerClient,
        queue: str,
        schema: type[M],
        handler: Handler[list[M]],
        *,
        prefetch: int,
        retry_pause: float = 1.0,
    ) -> None:
        super().__init__(client, queue, schema, prefetch=prefetch, retry_pause=retry_pause)
        self.batch_handler = handler

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            items, rejected = wire.decode_items(message.body, message.type, self.schema)
        except wire.UndecodableMessage as exc:
            await self._park(message, f"undecodable: {exc}", "undecodable")
            return
        if rejected:
            await self._set_apart(message, items, rejected)
            return
        count = _delivery_count(message)
        redelivered = bool(message.redelivered)
        try:
            await self.batch_handler(Delivery(items, redelivered, count))
        except Exception as exc:
            self._log_failure(message, count, exc)
            if count + 1 < self.client.config.delivery_limit:
                await self._requeue_later(message)
                return
            if len(items) == 1:
                reason = f"handler kept failing: {exc!r}"
                if await self._park_item(message, items[0], reason, "handler_error"):
                    await self._settle(message, requeue=None)
                else:
                    await self._requeue_later(message)
                return
            # Last chance: one by one, so that one poisonous item is parked
            # and not the batch it came with.
            for item in items:
                try:
                    await self.batch_handler(Delivery([item], redelivered, count))
                except PublishError:
                    await self._requeue_later(message)
                    return
                except Exception as item_exc:
                    reason = f"handler kept failing: {item_exc!r}"
                    if not await self._park_item(message, item, reason, "handler_error"):
                        await self._requeue_later(message)
                        return
        await self._settle(message, requeue=None)

    async def _set_apart(
        self, message: AbstractIncomingMessage, items: list[M], rejected: list[tuple[M, str]]
    ) -> None:
        """Park a batch's incomplete items and queue the rest again on its own.

        The input is then acked: its bad items are parked once, however
        often the rest of the batch has to be retried afterwards.
        """
        for item, reason in rejected:
            if not await self._park_item(message, item, f"undecodable: {reason}", "undecodable"):
                await self._requeue_later(message)
                return
        if items:
            try:
                await self.client.publish(self.queue_name, wire.encode_items(items))
            except PublishError as exc:
                log.warning("could not queue a batch's good items again", extra={"error": str(exc)})
                await self._requeue_later(message)
                return
        await self._settle(message, requeue=None)

    async def _park_item(
        self, message: AbstractIncomingMessage, item: M, reason: str, label: str
    ) -> bool:
        return await self._publish_parked(
            message,
            item.SerializeToString(),
            wire.type_name(item),
            _item_id(item) or message.message_id,
            reason,
            label,
            trace=_item_trace(item),
        )


def _item_id(item: Message) -> str | None:
    """The AMQP message_id the item would have had on its own."""
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


def _delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker delivered this message before (quorum queues count)."""
    value = (message.headers or {}).get("x-delivery-count", 0)
    return value if isinstance(value, int) else 0
