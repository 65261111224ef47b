"""Logs on RabbitMQ streams: append with confirms, replay from a moment.

A stream keeps what is appended (until its ``x-max-age``), and any number of
readers can go through it from an offset or a timestamp. To know where the
end is when a reader only wants what is there now, it first appends a marker
of its own (a header, skipped by every reader) and reads until it sees it:
everything confirmed before the marker comes before it in the stream.

:class:`FinishedJobs` is the record of delivery jobs that are done, the first
user of this: each finished job's key is appended (keys that finish together
share one stream message, so it costs a publish per group, not per job), and
a redelivered batch asks which of its jobs are in it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from mailyard.broker.port import LogEntry
from mailyard.broker.rabbitmq.client import BrokerClient

log = logging.getLogger(__name__)

MARKER = "x-mailyard-marker"
READ_PREFETCH = 1000


class StreamLog:
    def __init__(self, client: BrokerClient, name: str) -> None:
        self.client = client
        self.name = name

    async def append(self, records: Sequence[bytes]) -> None:
        now = datetime.now(UTC)
        publishes = [
            self.client.publish(
                self.name,
                aio_pika.Message(
                    record, timestamp=now, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
            )
            for record in records
        ]
        # One record (the record of finished jobs appends one at a time) needs
        # no task of its own, which gather would make.
        await (publishes[0] if len(publishes) == 1 else asyncio.gather(*publishes))

    async def read(
        self, since: datetime | None = None, *, follow: bool = False
    ) -> AsyncIterator[LogEntry]:
        marker = ""
        if not follow:
            marker = uuid.uuid4().hex
            await self.client.publish(
                self.name,
                aio_pika.Message(
                    b"",
                    headers={MARKER: marker},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
            )
        channel = await self.client.connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=READ_PREFETCH)
            queue = await channel.get_queue(self.name, ensure=False)
            arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            # A timestamp offset starts at the chunk holding that moment, so a
            # few earlier entries may come too; readers only need "not fewer".
            offset: datetime | str = since.replace(microsecond=0) if since else "first"
            await queue.consume(arrived.put, arguments={"x-stream-offset": offset})
            unacked = 0
            while True:
                message = await arrived.get()
                unacked += 1
                if unacked >= READ_PREFETCH // 2:
                    await message.ack(multiple=True)  # streams need acks only for credit
                    unacked = 0
                found = (message.headers or {}).get(MARKER)
                if found is not None:
                    if found == marker:
                        return
                    continue
                stamp = message.timestamp or datetime.fromtimestamp(0, UTC)
                yield LogEntry(stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC), message.body)
        finally:
            if not channel.is_closed:
                await channel.close()


class FinishedJobs:
    """The record of finished delivery jobs, on the ``<prefix>.done`` stream.

    ``record`` returns a future that resolves once the key is confirmed.
    Keys are gathered for ``linger`` seconds (or until ``max_keys`` wait)
    and go out as one append: at a steady load most jobs finish one by one,
    and an append (a publish and a confirm) per job cost as much again as
    the rest of the broker's work per message. A confirm does not cut the
    next group's linger short: that would make an append per round trip
    under load, a few jobs each. The job keeps its delivery slot until its
    key is confirmed or its batch acked, whichever is first, so the
    duplicate window stays ``delivery.concurrency``; nothing waits for it.
    A group that is due waits while ``max_in_flight`` appends are
    unconfirmed. ``finished`` serves every caller waiting at that moment
    with one read of the stream.
    """

    def __init__(
        self,
        log: StreamLog,
        *,
        max_in_flight: int = 2,
        linger: float = 0.02,
        max_keys: int = 1000,
    ) -> None:
        self.log = log
        self.max_in_flight = max_in_flight
        self.linger = linger
        self.max_keys = max_keys
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._due = False  # the oldest pending key has lingered enough (or max_keys wait)
        self._in_flight = 0
        self._appends: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._lookups: list[tuple[set[str], datetime, asyncio.Future[set[str]]]] = []
        self._reading: asyncio.Task[None] | None = None

    def record(self, key: str) -> asyncio.Future[None]:
        """Queue ``key`` for the next append; the future resolves once it is confirmed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((key, done))
        if len(self._pending) >= self.max_keys:
            self._due = True
        self._send_what_fits()
        return done

    def _lingered(self) -> None:
        self._timer = None
        self._due = True
        self._send_what_fits()

    def _send_what_fits(self) -> None:
        while self._due and self._pending and self._in_flight < self.max_in_flight:
            batch, self._pending = self._pending[: self.max_keys], self._pending[self.max_keys :]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._append(batch))
            self._appends.add(task)
            task.add_done_callback(self._appends.discard)
            self._due = len(self._pending) >= self.max_keys  # the rest lingers in turn
        if self._due or not self._pending:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._lingered)

    async def _append(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        try:
            await self.log.append(["\n".join(key for key, _ in batch).encode()])
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        finally:
            self._in_flight -= 1
            self._send_what_fits()

    async def flush(self) -> None:
        """Send what lingers now and wait until every append is confirmed (jobs
        alone in their message do not wait for theirs, so a clean stop must)."""
        while self._pending or self._appends:
            self._due = True
            self._send_what_fits()
            await asyncio.wait(set(self._appends))

    async def finished(self, keys: Collection[str], since: datetime) -> set[str]:
        found: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._lookups.append((set(keys), since, found))
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read_for_waiting())
        return await found

    async def _read_for_waiting(self) -> None:
        while self._lookups:
            lookups, self._lookups = self._lookups, []
            wanted = set().union(*(keys for keys, _, _ in lookups))
            seen: set[str] = set()
            try:
                async for entry in self.log.read(min(since for _, since, _ in lookups)):
                    seen.update(k for k in entry.data.decode().split("\n") if k in wanted)
            except Exception as exc:
                for _, _, found in lookups:
                    if not found.done():
                        found.set_exception(exc)
                continue
            for keys, _, found in lookups:
                if not found.done():
                    found.set_result(keys & seen)
