"""Consuming a RabbitMQ queue: AMQP deliveries in, the consumer core's decisions out.

Outputs are published with confirms before the input is acked; parked
copies go to ``<prefix>.parking`` first, too. If the connection drops
mid-handling, the ack fails and the broker redelivers (at-least-once). A
redelivered batch asks the record of finished jobs which of its jobs were
done before the crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from google.protobuf.message import Message

from mailyard.broker.consuming import ConsumerCore, Incoming, Parked
from mailyard.broker.port import Handler, Output
from mailyard.broker.rabbitmq import amqp
from mailyard.broker.topology import QueueName
from mailyard.config import TRANSACTIONAL

if TYPE_CHECKING:
    from mailyard.broker.rabbitmq.adapter import RabbitBroker

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class RabbitConsumer:
    def __init__(
        self,
        broker: RabbitBroker,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
        retry_pause: float = 1.0,
    ) -> None:
        self.broker = broker
        self.queue_name = broker.topology.queue(queue, lane)
        self.prefetch = prefetch
        self.retry_pause = retry_pause
        self.core: ConsumerCore[Any] = ConsumerCore(
            service=broker.service,
            queue=queue,
            queue_name=self.queue_name,
            role=broker.topology.role(self.queue_name),
            schema=schema,
            handler=handler,
            settlement=self,
            delivery_limit=broker.topology.delivery_limit,
        )
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._channel = await self.broker.client.channel(prefetch=self.prefetch)
        self._queue = await self._channel.get_queue(self.queue_name)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace: float) -> None:
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
        if task is not None:  # aio-pika runs each delivery in its own task
            self._in_flight.add(task)
        try:
            await self.core.run(
                Incoming(
                    body=message.body,
                    type_name=message.type,
                    message_id=message.message_id,
                    headers=dict(message.headers or {}),
                    redelivered=bool(message.redelivered) or _delivery_count(message) > 0,
                    delivery_count=_delivery_count(message),
                    handle=message,
                )
            )
        finally:
            if task is not None:
                self._in_flight.discard(task)

    # --- Settlement -------------------------------------------------------

    async def release(
        self, incoming: Incoming, outputs: Sequence[Output], parked: Sequence[Parked]
    ) -> str:
        publishes = [self.broker.store(outputs)] if outputs else []
        publishes += [
            self.broker.client.publish(
                self.broker.topology.parking,
                amqp.message(entry.body, entry.type_name, entry.message_id, entry.headers),
            )
            for entry in parked
        ]
        if len(publishes) == 1:
            await publishes[0]
        elif publishes:
            await asyncio.gather(*publishes)
        return await self._settle(incoming, requeue=None)

    async def retry_later(self, incoming: Incoming) -> str:
        await asyncio.sleep(self.retry_pause)
        return await self._settle(incoming, requeue=True)

    async def complete(
        self, incoming: Incoming, key: str, outputs: Sequence[Output]
    ) -> asyncio.Future[None]:
        recorded = self.broker.finished_jobs.record(key)  # under way while the outputs go
        if outputs:
            try:
                await self.broker.store(outputs)
            except BaseException:
                recorded.add_done_callback(_quietly)  # this failure is the one reported
                raise
        recorded.add_done_callback(self._unrecorded(key))
        return recorded

    def _unrecorded(self, key: str) -> Callable[[asyncio.Future[None]], None]:
        def check(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is None:
                return
            log.warning(
                "could not record a finished job; a redelivery or a copy of it from a "
                "queue restart would be delivered again",
                extra={"queue": self.queue_name, "key": key, "error": repr(future.exception())},
            )

        return check

    async def finished(self, keys: Collection[str], since: datetime) -> set[str]:
        return await self.broker.finished_jobs.finished(keys, since)

    async def _settle(self, incoming: Incoming, *, requeue: bool | None) -> str:
        """Ack (requeue=None) or nack; a dead channel means the broker redelivers."""
        message = incoming.handle
        assert isinstance(message, AbstractIncomingMessage)  # we made the Incoming
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
            return "lost_channel"
        return "acked" if requeue is None else "requeued"


def _delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker delivered this message before (quorum queues count)."""
    value = (message.headers or {}).get("x-delivery-count", 0)
    return value if isinstance(value, int) else 0


def _quietly(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
