"""The broker port on the embedded spool: ``broker.url: embedded``.

The same promises as on RabbitMQ, kept by one SQLite file: a message is
stored (fsync'd) before ingress says ``250``; a consumer's input is released
in the same transaction that stores what it produced; the retry ladder is a
time before which an item is not handed out (on the item's own lane: the
spool's queues are the roles, ``delivery.bulk`` for a lane); events reach the queues bound
to their kind (the bounce queue for ``failed`` and ``expired``); poison is
parked with its reason; after a crash every unreleased item is delivered
again. Only one process may own a spool, so only ``mailyard all`` runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from mailyard import wire
from mailyard.broker import metrics
from mailyard.broker.consuming import ConsumerCore, Incoming, Parked
from mailyard.broker.embedded.spool import (
    PARKING,
    NewItem,
    Spool,
    SpoolError,
    Write,
    append_log_outside,
    read_log_outside,
)
from mailyard.broker.jitter import jittered
from mailyard.broker.members import SoleMember
from mailyard.broker.port import (
    BrokerUnavailable,
    Consumer,
    Emit,
    Handler,
    Log,
    LogEntry,
    Output,
    Publish,
    PublishError,
    QueueState,
)
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind, QueueName, Topology
from mailyard.config import TRANSACTIONAL
from mailyard.v1 import members_pb2 as mpb

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Which queues each event kind reaches; other kinds have no subscriber here.
BINDINGS: dict[str, tuple[QueueName, ...]] = {
    kind.value: (QueueName.BOUNCE,) for kind in BOUNCE_EVENTS
}
FINISHED_RETENTION = timedelta(days=1)


class EmbeddedBroker:
    """One service's view of the process's spool."""

    def __init__(self, spool: Spool, topology: Topology, *, service: str) -> None:
        self.spool = spool
        self.topology = topology
        self.service = service
        self._open = False
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._open and self.spool.healthy

    async def connect(self, *, attempts: int | None = None) -> None:
        if not self._open:
            await self.spool.open()
            self._open = True
            metrics.CONNECTED.labels(self.service).set(1)
            if self.service == "queue":  # one housekeeper per process is enough
                self._maintenance = asyncio.create_task(self._forget_old_records())

    async def close(self) -> None:
        if self._open:
            self._open = False
            if self._maintenance is not None:
                self._maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._maintenance
            metrics.CONNECTED.labels(self.service).set(0)
            await self.spool.close()

    async def store(self, outputs: Sequence[Output]) -> None:
        await self.write(Write(inserts=self.rows(outputs)))

    def hears(self, kind: EventKind) -> bool:
        return kind.value in BINDINGS

    async def write(self, write: Write) -> list[int]:
        if not self.connected:
            metrics.PUBLISH_FAILURES.labels(self.service, "unavailable").inc()
            raise BrokerUnavailable("the embedded spool is not open")
        try:
            ids = await self.spool.write(write)
        except SpoolError as exc:
            metrics.PUBLISH_FAILURES.labels(self.service, "rejected").inc()
            raise PublishError(str(exc)) from exc
        if write.inserts:
            metrics.PUBLISHED.labels(self.service, "spool").inc(len(write.inserts))
        return ids

    def rows(self, outputs: Sequence[Output]) -> list[NewItem]:
        rows: list[NewItem] = []
        now = time.time()
        for output in outputs:
            if isinstance(output, Emit):
                encoded = wire.encode_event(output.event, output.kind.value)
                queues = BINDINGS.get(output.kind.value, ())
                if not queues:
                    metrics.UNSUBSCRIBED.labels(self.service, output.kind.value).inc()
                rows.extend(_row(queue.value, encoded) for queue in queues)
            else:
                rows.append(self._publish_row(output, now))
        return rows

    def _publish_row(self, publish: Publish, now: float) -> NewItem:
        topology = self.topology
        lane = topology.lane(publish.lane)
        queue = topology.role(topology.queue(publish.queue, lane))
        encoded = wire.encode_items(publish.items)
        if publish.delay is None:
            return _row(queue, encoded)
        # The rung as the other adapters name it ("5m", "5m.bulk"), for depths.
        rung = topology.role(topology.retry_queue(publish.delay, lane)).removeprefix("retry.")
        available_at = now + jittered(publish.delay.total_seconds(), publish.spread)
        return _row(queue, encoded, available_at=available_at, rung=rung)

    def consumer(
        self,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
    ) -> Consumer:
        return EmbeddedConsumer(self, queue, schema, handler, prefetch=prefetch, lane=lane)

    async def queue_states(self) -> dict[str, QueueState]:
        depths = self.spool.depths()
        topology = self.topology
        names = [topology.role(name) for name in (*topology.work_queues, *topology.retry_queues)]
        return {name: QueueState(*depths.get(name, (0, 0))) for name in [*names, PARKING]}

    async def check_message_size(self, size: int) -> None:
        """SQLite holds blobs up to 1 GB; ingress.max_message_size stays far below."""

    def log(self, name: str) -> Log:
        return SpoolLog(self.spool, name)

    def membership(self, group: str, *, interval: float) -> SoleMember:
        return SoleMember()  # one process owns the spool

    async def heartbeats(self, seconds: float) -> list[mpb.Heartbeat]:
        return []

    async def _forget_old_records(self) -> None:
        while True:
            await asyncio.sleep(600)
            with contextlib.suppress(SpoolError):
                await self.spool.forget_finished(time.time() - FINISHED_RETENTION.total_seconds())


def _row(
    queue: str, encoded: wire.Encoded, *, available_at: float = 0.0, rung: str | None = None
) -> NewItem:
    return NewItem(
        queue, encoded.type, encoded.message_id, encoded.headers, encoded.body, available_at, rung
    )


class EmbeddedConsumer:
    """Hands a queue's ready items to the consumer core, at most ``prefetch`` at once."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
        retry_pause: float = 1.0,
    ) -> None:
        self.broker = broker
        self.spool = broker.spool
        queue_name = broker.topology.queue(queue, lane)
        self.name = broker.topology.role(queue_name)  # the spool's name of the queue
        self.prefetch = prefetch
        self.retry_pause = retry_pause
        self.core: ConsumerCore[Any] = ConsumerCore(
            service=broker.service,
            queue=queue,
            queue_name=queue_name,
            role=self.name,
            schema=schema,
            handler=handler,
            settlement=self,
            delivery_limit=broker.topology.delivery_limit,
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = self.spool.attach(self.name)
        self._loop = asyncio.create_task(self._take_forever(ready), name=f"consume-{self.name}")

    async def stop(self, grace: float) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
            self.spool.detach(self.name)
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace)
            if pending:
                log.warning(
                    "stopping with unfinished work; it is delivered again at the next start",
                    extra={"queue": self.name, "unfinished": len(pending)},
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _take_forever(self, ready: asyncio.Event) -> None:
        while True:
            room = self.prefetch - len(self._in_flight)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            if not self.spool.ready_count(self.name):
                await ready.wait()
                continue
            try:
                taken = await self.spool.take(self.name, room)
            except SpoolError as exc:
                log.error("cannot take items from the spool", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            for item in taken:
                task = asyncio.create_task(self.core.run(_incoming(item)))
                self._in_flight.add(task)
                task.add_done_callback(self._finished_task)

    def _finished_task(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer task failed", exc_info=task.exception())

    # --- Settlement -------------------------------------------------------

    async def release(
        self, incoming: Incoming, outputs: Sequence[Output], parked: Sequence[Parked]
    ) -> str:
        rows = self.broker.rows(outputs) + [_parked_row(entry) for entry in parked]
        await self.broker.write(Write(inserts=rows, deletes=[_item_id(incoming)]))
        return "acked"

    async def retry_later(self, incoming: Incoming) -> str:
        await asyncio.sleep(self.retry_pause)
        self.spool.give_back(self.name, _item_id(incoming))
        return "requeued"

    async def complete(
        self, incoming: Incoming, key: str, outputs: Sequence[Output]
    ) -> asyncio.Future[None]:
        # The record is written in the outputs' transaction: durable with them.
        await self.broker.write(Write(inserts=self.broker.rows(outputs), finished=[key]))
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        recorded.set_result(None)
        return recorded

    async def finished(self, keys: Collection[str], since: datetime) -> set[str]:
        return await self.spool.finished(keys)


def _incoming(item: Any) -> Incoming:
    return Incoming(
        body=item.body,
        type_name=item.type,
        message_id=item.message_id,
        headers=item.headers,
        redelivered=item.deliveries > 0,
        delivery_count=item.deliveries,
        handle=item.id,
    )


def _item_id(incoming: Incoming) -> int:
    if not isinstance(incoming.handle, int):
        raise TypeError("not an item of the embedded spool")
    return incoming.handle


def _parked_row(entry: Parked) -> NewItem:
    return NewItem(PARKING, entry.type_name, entry.message_id, entry.headers, entry.body)


class SpoolLog:
    """A log in the spool's ``log`` table: appended with a group commit, read in id order.

    A follower wakes when this process appends, and looks every ``poll``
    seconds for entries another process appended (``append_log_outside``:
    the command line while ``mailyard all`` runs).
    """

    def __init__(self, spool: Spool, name: str, *, poll: float = 1.0) -> None:
        self.spool = spool
        self.name = name
        self.poll = poll

    async def append(self, records: Sequence[bytes]) -> None:
        try:
            await self.spool.write(Write(log_entries=[(self.name, r) for r in records]))
        except SpoolError as exc:
            raise PublishError(str(exc)) from exc

    async def read(
        self, since: datetime | None = None, *, follow: bool = False
    ) -> AsyncIterator[LogEntry]:
        after, start = 0, since.timestamp() if since else 0.0
        appended = self.spool.log_appended(self.name)
        while True:
            appended.clear()
            rows = await self.spool.read_log(self.name, after, start, 500)
            for row_id, at, data in rows:
                after = row_id
                yield LogEntry(datetime.fromtimestamp(at, UTC), data)
            if len(rows) == 500:
                continue
            if not follow:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(appended.wait(), timeout=self.poll)


class OutsideSpoolLog:
    """A log of a spool that another process may own, for the command line.

    Appends and reads go straight to the SQLite file (``append_log_outside``,
    ``read_log_outside``), so they work whether ``mailyard all`` runs or not;
    a running one picks the appended entries up within a second. No follow.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name

    async def append(self, records: Sequence[bytes]) -> None:
        try:
            await asyncio.to_thread(append_log_outside, self.directory, self.name, records)
        except SpoolError as exc:
            raise PublishError(str(exc)) from exc

    async def read(
        self, since: datetime | None = None, *, follow: bool = False
    ) -> AsyncIterator[LogEntry]:
        if follow:
            raise NotImplementedError("only the spool's owner follows its logs")
        start = since.timestamp() if since else 0.0
        rows = await asyncio.to_thread(read_log_outside, self.directory, self.name, start)
        for at, data in rows:
            yield LogEntry(datetime.fromtimestamp(at, UTC), data)


def open_spool(directory: Path) -> Spool:
    return Spool(directory)
