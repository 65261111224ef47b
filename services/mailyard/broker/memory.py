"""The broker port in memory, for unit tests: no sockets, no files, no waiting.

It records what a service stores, can hold every store until the test lets
it through (to see what happens while a confirm is outstanding) or fail it,
and hands a consumer's handler a message the test chose, running the same
consumer core as the real adapters. What the core decided is returned as a
:class:`Settled` for the test to look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from mailyard import wire
from mailyard.broker.consuming import ConsumerCore, Incoming, Parked
from mailyard.broker.members import SoleMember
from mailyard.broker.port import (
    BrokerUnavailable,
    Consumer,
    Handler,
    LogEntry,
    Output,
    Publish,
    PublishError,
    QueueState,
)
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind, QueueName, Topology
from mailyard.config import TRANSACTIONAL
from mailyard.v1 import members_pb2 as mpb

M = TypeVar("M", bound=Message)


@dataclass
class Settled:
    """What became of one message handed to a consumer."""

    outcome: str = ""  # acked, requeued, lost_channel
    outputs: list[Output] = field(default_factory=list)  # stored with the release
    parked: list[Parked] = field(default_factory=list)
    completed: list[tuple[str, list[Output]]] = field(default_factory=list)  # (key, outputs)


class MemoryBroker:
    def __init__(self, topology: Topology | None = None, *, service: str = "test") -> None:
        self.service = service
        self.topology = topology or Topology("test", (), delivery_limit=5)
        self.stored: list[Output] = []  # every store(), in order
        self.finished_keys: set[str] = set()
        self.hold = False  # stores wait for release_held()
        self.hold_records = False  # completions' records wait for release_records()
        self.held_records: list[tuple[str, asyncio.Future[None]]] = []
        self.fail_with: Exception | None = None  # stores raise this
        self.is_connected = True
        self.unheard: set[EventKind] = set()  # kinds hears() says nobody hears
        self.logs: dict[str, list[LogEntry]] = {}
        self.memory_logs: dict[str, MemoryLog] = {}
        self._held: list[asyncio.Future[None]] = []
        self._consumers: dict[tuple[QueueName, str], MemoryConsumer] = {}  # by (role, lane)

    @property
    def connected(self) -> bool:
        return self.is_connected

    async def connect(self, *, attempts: int | None = None) -> None:
        self.is_connected = True

    async def close(self) -> None:
        self.is_connected = False

    async def store(self, outputs: Sequence[Output]) -> None:
        if not self.is_connected:
            raise BrokerUnavailable("not connected (MemoryBroker)")
        if self.hold:
            held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.append(held)
            await held
        if self.fail_with is not None:
            raise self.fail_with
        self.stored.extend(outputs)

    def hears(self, kind: EventKind) -> bool:
        return kind in BOUNCE_EVENTS or kind not in self.unheard

    def release_records(self) -> None:
        """The held records of finished items become durable."""
        held, self.held_records = self.held_records, []
        for key, recorded in held:
            self.finished_keys.add(key)
            if not recorded.done():
                recorded.set_result(None)

    def release_held(self, error: Exception | None = None) -> None:
        """Let every held store finish (or fail with ``error``)."""
        held, self._held = self._held, []
        for future in held:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    @property
    def held(self) -> int:
        return len(self._held)

    def consumer(
        self,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
    ) -> Consumer:
        consumer = MemoryConsumer(self, queue, schema, handler, lane=lane)
        self._consumers[self._key(queue, lane)] = consumer
        return consumer

    def _key(self, queue: QueueName, lane: str) -> tuple[QueueName, str]:
        # The lane as named, not as this topology maps it: a test's broker
        # need not be told the classes of the service it runs.
        return queue, (lane or TRANSACTIONAL) if queue is QueueName.DELIVERY else TRANSACTIONAL

    def consumes(self, queue: QueueName, lane: str = TRANSACTIONAL) -> bool:
        """Whether a consumer of ``queue`` (of its ``lane``) was made."""
        return self._key(queue, lane) in self._consumers

    async def deliver(
        self,
        queue: QueueName,
        items: Sequence[Message],
        *,
        lane: str | None = None,
        redelivered: bool = False,
        delivery_count: int = 0,
        body: bytes | None = None,
        type_name: str | None = None,
    ) -> Settled:
        """Hand one message carrying ``items`` (or a raw ``body``) to ``queue``'s consumer:
        of ``lane``, or for delivery jobs of the lane of their class."""
        if lane is None:
            lane = Publish(queue, tuple(items)).lane if items else TRANSACTIONAL
        consumer = self._consumers[self._key(queue, lane)]
        if body is None:
            encoded = wire.encode_items(items)
            body, type_name, message_id, headers = (
                encoded.body,
                encoded.type,
                encoded.message_id,
                dict(encoded.headers),
            )
        else:
            message_id, headers = None, {}
        settled = Settled()
        await consumer.core.run(
            Incoming(body, type_name, message_id, headers, redelivered, delivery_count, settled)
        )
        return settled

    async def queue_states(self) -> dict[str, QueueState]:
        topology = self.topology
        consumed = {topology.queue(role, lane) for role, lane in self._consumers}
        return {
            topology.role(name): QueueState(0, int(name in consumed))
            for name in (*topology.work_queues, *topology.retry_queues)
        }

    async def check_message_size(self, size: int) -> None:
        """Anything fits in memory."""

    def membership(self, group: str, *, interval: float) -> SoleMember:
        return SoleMember()

    async def heartbeats(self, seconds: float) -> list[mpb.Heartbeat]:
        return []

    def log(self, name: str) -> MemoryLog:
        log = self.memory_logs.get(name)
        if log is None:
            log = self.memory_logs[name] = MemoryLog(self.logs.setdefault(name, []))
        return log


class MemoryConsumer:
    def __init__(
        self,
        broker: MemoryBroker,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        lane: str = TRANSACTIONAL,
    ) -> None:
        self.broker = broker
        self.started = False
        queue_name = broker.topology.queue(queue, lane)
        self.core: ConsumerCore[Any] = ConsumerCore(
            service=broker.service,
            queue=queue,
            queue_name=queue_name,
            role=broker.topology.role(queue_name),
            schema=schema,
            handler=handler,
            settlement=self,
            delivery_limit=broker.topology.delivery_limit,
        )

    async def start(self) -> None:
        self.started = True

    async def stop(self, grace: float) -> None:
        self.started = False

    @property
    def in_flight(self) -> int:
        return 0

    async def release(
        self, incoming: Incoming, outputs: Sequence[Output], parked: Sequence[Parked]
    ) -> str:
        await self.broker.store(outputs)
        settled = _settled(incoming)
        settled.outputs.extend(outputs)
        settled.parked.extend(parked)
        settled.outcome = "acked"
        return "acked"

    async def retry_later(self, incoming: Incoming) -> str:
        _settled(incoming).outcome = "requeued"
        return "requeued"

    async def complete(
        self, incoming: Incoming, key: str, outputs: Sequence[Output]
    ) -> asyncio.Future[None]:
        await self.broker.store(outputs)
        _settled(incoming).completed.append((key, list(outputs)))
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broker.hold_records:
            self.broker.held_records.append((key, recorded))
        else:
            self.broker.finished_keys.add(key)
            recorded.set_result(None)
        return recorded

    async def finished(self, keys: Collection[str], since: datetime) -> set[str]:
        return set(keys) & self.broker.finished_keys


def _settled(incoming: Incoming) -> Settled:
    if not isinstance(incoming.handle, Settled):
        raise TypeError("not a MemoryBroker delivery")
    return incoming.handle


class MemoryLog:
    """A list of entries; ``fail_with`` makes appends raise (a broker that refuses)."""

    def __init__(self, entries: list[LogEntry]) -> None:
        self.entries = entries
        self.fail_with: Exception | None = None
        self._followers: set[asyncio.Event] = set()  # one per following reader

    async def append(self, records: Sequence[bytes]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        now = datetime.now(UTC)
        self.entries.extend(LogEntry(now, record) for record in records)
        for appended in self._followers:
            appended.set()

    async def read(
        self, since: datetime | None = None, *, follow: bool = False
    ) -> AsyncIterator[LogEntry]:
        appended = asyncio.Event()
        if follow:
            self._followers.add(appended)
        try:
            position = 0
            while True:
                appended.clear()
                while position < len(self.entries):
                    entry = self.entries[position]
                    position += 1
                    if since is None or entry.at >= since:
                        yield entry
                if not follow:
                    return
                await appended.wait()
        finally:
            self._followers.discard(appended)


__all__ = ["MemoryBroker", "PublishError", "Settled"]
