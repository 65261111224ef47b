"""The broker port: everything a service asks of a broker, and nothing more.

A service's handler is handed :class:`Work` (the decoded items of one
broker message) and returns the :data:`Output` it produced: items to store
on a queue (:class:`Publish`, possibly after a delay: the retry ladder) and
events (:class:`Emit`). The adapter makes the outputs durable and only then
releases the input; a handler that raises gets its input back later, and
parked after ``broker.delivery_limit`` tries.

A batch item finished early (a delivery job, while its batch-mates are still
under way) is released on its own with :meth:`Work.complete`: its outputs are
stored together with a durable record that the item is done, and a redelivery
of the batch (a crash, a restart) skips it. That keeps the duplicate window
to the SMTP transactions in flight, as Postfix's.

Two adapters sit behind this port: RabbitMQ (``mailyard.broker.rabbitmq``,
what the chart deploys) and an embedded SQLite spool
(``mailyard.broker.embedded``, ``broker.url: embedded``, for one process on one
machine). ``mailyard.broker.memory`` is a third, in memory, for unit tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from mailyard.broker.topology import EventKind, QueueName, Topology
from mailyard.config import TRANSACTIONAL
from mailyard.v1 import members_pb2 as mpb
from mailyard.v1 import message_pb2 as pb

M = TypeVar("M", bound=Message)


class PublishError(Exception):
    """The broker did not take responsibility for a message."""


class BrokerUnavailable(PublishError):
    """There is no connection to the broker right now."""


class Unroutable(PublishError):
    """A publish that no queue is bound to receive."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Store ``items`` on ``queue`` as one message (a batch when there are several).

    ``delay``: the items become available only after it (a rung of the retry
    ladder; on RabbitMQ it must be one of the topology's ``retry_delays``).
    ``spread``: jitter; they may come back up to ``spread * delay`` early, at
    random, so that what was deferred together does not return in one wave.

    Delivery jobs go to the lane of their ``mail_class`` (:attr:`lane`), and
    their rungs hand them back to it: the job says where it belongs, so no
    publisher (a planner, a batch queued again) can send it down another
    lane. The jobs of one Publish share a class.
    """

    queue: QueueName
    items: tuple[Message, ...]
    delay: timedelta | None = None
    spread: float = 0.0

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("a Publish needs at least one item")
        if self.queue is QueueName.DELIVERY:
            classes = {_class_of(item) for item in self.items}
            if len(classes) > 1:
                raise ValueError(
                    f"one Publish to the delivery lanes carries jobs of one class, "
                    f"not {sorted(classes)}"
                )

    @property
    def lane(self) -> str:
        """The class whose lane the items go to (delivery jobs; transactional otherwise)."""
        return _class_of(self.items[0]) if self.queue is QueueName.DELIVERY else TRANSACTIONAL


def _class_of(item: Message) -> str:
    return getattr(item, "mail_class", "") or TRANSACTIONAL


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish an event; ``failed`` and ``expired`` must reach the bounce queue."""

    kind: EventKind
    event: pb.DeliveryEvent


Output = Publish | Emit


@dataclass(frozen=True, slots=True)
class QueueState:
    messages: int  # ready (not counting those being worked on)
    consumers: int


class Work(Generic[M]):
    """The items of one broker message, as a handler sees them."""

    def __init__(
        self,
        items: Sequence[M],
        *,
        redelivered: bool,
        delivery_count: int,
        complete: Callable[[M, Sequence[Output]], Awaitable[asyncio.Future[None]]] | None = None,
    ) -> None:
        self.items = list(items)
        self.redelivered = redelivered
        self.delivery_count = delivery_count
        self._complete = complete
        self.after_release: list[Callable[[], None]] = []

    def then(self, account: Callable[[], None]) -> None:
        """Run ``account`` once the outputs are stored and the input released
        (metrics and logs that must not count work that is tried again)."""
        self.after_release.append(account)

    async def complete(self, item: M, outputs: Sequence[Output]) -> asyncio.Future[None]:
        """Store one item's outputs now, with the record that it is done.

        Returns once the outputs are durable, with a future that resolves
        once a redelivery of this message would leave the item out: its
        record is durable (or failed: the broker is gone), or the message
        itself was released (acked: no redelivery). Until then the item is
        in the duplicate window, and delivery keeps its job slot. The record
        can take a while (RabbitMQ: a linger and a confirm), and most
        batches finish all at once, so nobody waits for it: the job is
        done, its slot is not free yet. Only for items that have a key
        (:func:`mailyard.broker.records.key_of`): delivery jobs.
        """
        if self._complete is None:
            raise TypeError("this queue's items cannot be completed one by one")
        return await self._complete(item, outputs)


Handler = Callable[[Work[M]], Awaitable[Sequence[Output]]]


class Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None:
        """Stop taking messages, let in-flight ones finish (up to ``grace`` s)."""

    @property
    def in_flight(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: datetime
    data: bytes


class Log(Protocol):
    """An append-only log every replica can replay (the suppression list's changes)."""

    async def append(self, records: Sequence[bytes]) -> None:
        """Returns once every record is durable."""

    def read(
        self, since: datetime | None = None, *, follow: bool = False
    ) -> AsyncIterator[LogEntry]:
        """Entries from ``since`` (the start when None) to the end; with
        ``follow``, then every new one as it comes, until cancelled."""


class Membership(Protocol):
    """The live processes of one group, as this one sees them (broker/members.py)."""

    @property
    def count(self) -> int: ...

    @property
    def rank(self) -> int:
        """This process's place among them, 0-based, the same in every member's eyes."""

    def on_change(self, callback: Callable[[], None]) -> None: ...

    async def start(self, beat: Callable[[], mpb.Heartbeat]) -> None:
        """Join, sending ``beat()`` every interval; returns once the others know us."""

    async def stop(self) -> None:
        """Leave (the others count us out at once)."""


class Broker(Protocol):
    """One service's handle on the broker."""

    service: str
    topology: Topology

    @property
    def connected(self) -> bool: ...

    async def connect(self, *, attempts: int | None = None) -> None:
        """Connect (retrying forever when ``attempts`` is None) and declare what is needed."""

    async def close(self) -> None: ...

    async def store(self, outputs: Sequence[Output]) -> None:
        """Make every output durable; returns once all are, or raises PublishError."""

    def hears(self, kind: EventKind) -> bool:
        """Whether an event of ``kind`` would reach anyone now. Always true of
        the ``BOUNCE_EVENTS``; a planner may leave out an event of another kind
        when false, rather than build one that goes nowhere."""

    def consumer(
        self,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
    ) -> Consumer:
        """A consumer of ``queue`` (of its ``lane``, a class, for the delivery role)."""

    async def queue_states(self) -> dict[str, QueueState]:
        """(ready messages, consumers) of every queue, by role (``"delivery"``,
        ``"delivery.bulk"``, ``"retry.5m"``, ``"retry.5m.bulk"``)."""

    async def check_message_size(self, size: int) -> None:
        """Raise MessageSizeMismatch when a message of ``size`` bytes cannot be stored."""

    def log(self, name: str) -> Log: ...

    def membership(self, group: str, *, interval: float) -> Membership: ...

    async def heartbeats(self, seconds: float) -> list[mpb.Heartbeat]:
        """Every member's latest beat heard within ``seconds`` (``mailyard status``)."""


class MessageSizeMismatch(Exception):
    """ingress.max_message_size cannot be stored by this broker."""
