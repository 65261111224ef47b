"""Group commit: store messages that finish DATA close together with one publish.

A database's group commit, applied to the broker: while ``max_in_flight``
publishes await their confirm, messages that arrive queue up, and when one
confirm comes back they go out together as one ``AcceptedBatch``. A message
that finds nothing pending is published at once, so a quiet server adds no
delay; a busy one pays RabbitMQ (enqueue, Raft, confirm, delivery, ack) per
batch instead of per message. Batches grow with the load by themselves.

Each caller's ``store`` returns only when the publish that carried its
message is confirmed, and raises if that publish failed: the 250-after-
confirm guarantee is the same as with one publish per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from mailyard.broker import PublishError
from mailyard.ingress import metrics
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

Publish = Callable[[list[pb.AcceptedMessage]], Awaitable[None]]


class GroupCommit:
    def __init__(
        self, publish: Publish, *, max_messages: int, max_bytes: int, max_in_flight: int
    ) -> None:
        self._publish = publish
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self._pending: deque[tuple[pb.AcceptedMessage, asyncio.Future[None]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def store(self, message: pb.AcceptedMessage) -> None:
        """Return once ``message`` is confirmed by the broker; PublishError if not."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((message, done))
        self._send_what_fits()
        # A client that hangs up cancels only its own future: the publish is a
        # task of its own and carries the batch's other messages on.
        await done

    async def drain(self) -> None:
        """Wait for every publish under way (for shutdown)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _send_what_fits(self) -> None:
        while self._pending and len(self._in_flight) < self.max_in_flight:
            batch = self._take_batch()
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)

    def _take_batch(self) -> list[tuple[pb.AcceptedMessage, asyncio.Future[None]]]:
        """The oldest pending messages that fit one batch (a big one goes alone).

        Sizes are encoded sizes: a thousand recipients weigh as much as the body.
        """
        batch = [self._pending.popleft()]
        size = batch[0][0].ByteSize()
        while self._pending and len(batch) < self.max_messages:
            following = self._pending[0][0].ByteSize()
            if size + following > self.max_bytes:
                break
            batch.append(self._pending.popleft())
            size += following
        return batch

    async def _send(self, batch: list[tuple[pb.AcceptedMessage, asyncio.Future[None]]]) -> None:
        metrics.BATCH_MESSAGES.observe(len(batch))
        try:
            await self._publish([message for message, _ in batch])
        except BaseException as exc:  # cancelled at shutdown included: nobody waits forever
            error = exc if isinstance(exc, PublishError) else PublishError(repr(exc))
            if error is not exc and isinstance(exc, Exception):
                log.error("storing a batch failed unexpectedly", exc_info=exc)
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.discard(task)
            self._send_what_fits()
