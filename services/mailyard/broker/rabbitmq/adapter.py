"""The broker port on RabbitMQ, the deployed default.

Every publish is persistent, ``mandatory`` and waits for the broker's
confirm; items go to quorum queues (a delivery job to its class's lane), the
retry ladder is one TTL queue per delay and lane that dead-letters back to
that lane, events go to a topic exchange, logs are streams. aio-pika and
AMQP stop at this package.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import Message

from mailyard import wire
from mailyard.broker.jitter import jittered
from mailyard.broker.port import (
    Consumer,
    Emit,
    Handler,
    Log,
    Membership,
    Output,
    Publish,
    QueueState,
)
from mailyard.broker.rabbitmq import members, sizecheck
from mailyard.broker.rabbitmq.amqp import amqp_message
from mailyard.broker.rabbitmq.client import BrokerClient
from mailyard.broker.rabbitmq.consumer import RabbitConsumer
from mailyard.broker.rabbitmq.events import EventPublisher
from mailyard.broker.rabbitmq.members import RabbitMembership
from mailyard.broker.rabbitmq.streams import FinishedJobs, StreamLog
from mailyard.broker.topology import EventKind, QueueName, Topology
from mailyard.config import TRANSACTIONAL, BrokerConfig
from mailyard.v1 import members_pb2 as mpb

M = TypeVar("M", bound=Message)

log = logging.getLogger(__name__)

RECORD_FLUSH_SECONDS = 5.0  # at close: finished jobs' records still lingering or unconfirmed


class RabbitBroker:
    def __init__(self, config: BrokerConfig, topology: Topology, *, service: str) -> None:
        self.service = service
        self.topology = topology
        self.client = BrokerClient(config, topology, service=service)
        self.events = EventPublisher(
            self.client, recheck=config.unrouted_event_recheck.total_seconds()
        )
        self.finished_jobs = FinishedJobs(StreamLog(self.client, topology.done))
        self._retry_queues = {
            (delay, lane): topology.retry_queue(delay, lane)
            for lane in topology.lanes
            for delay in topology.retry_delays
        }

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def connect(self, *, attempts: int | None = None) -> None:
        await self.client.connect(attempts=attempts)

    async def close(self) -> None:
        if self.client.connected:
            try:
                async with asyncio.timeout(RECORD_FLUSH_SECONDS):
                    await self.finished_jobs.flush()
            except TimeoutError:
                log.warning(
                    "stopping with finished jobs not yet recorded; a copy of them from a "
                    "queue restart would be delivered again"
                )
        await self.client.close()

    async def store(self, outputs: Sequence[Output]) -> None:
        publishes = [self._publish(output) for output in outputs]
        if len(publishes) == 1:
            await publishes[0]
        elif publishes:
            await asyncio.gather(*publishes)

    async def _publish(self, output: Output) -> None:
        if isinstance(output, Emit):
            await self.events.publish(output.kind, output.event)
            return
        expiration = None
        if output.delay is not None and output.spread > 0:
            expiration = jittered(output.delay.total_seconds(), output.spread)
        await self.client.publish(
            self._routing_key(output), amqp_message(_encode(output), expiration=expiration)
        )

    def hears(self, kind: EventKind) -> bool:
        return self.events.hears(kind)

    def _routing_key(self, publish: Publish) -> str:
        lane = self.topology.lane(publish.lane)
        if publish.delay is None:
            return self.topology.queue(publish.queue, lane)
        if publish.queue is not QueueName.DELIVERY:
            raise ValueError("only delivery jobs wait on the retry ladder")
        queue = self._retry_queues.get((publish.delay, lane))
        if queue is None:
            raise ValueError(
                f"no retry queue waits {publish.delay}; the ladder is queue.retry_delays"
            )
        return queue

    def consumer(
        self,
        queue: QueueName,
        schema: type[M],
        handler: Handler[M],
        *,
        prefetch: int,
        lane: str = TRANSACTIONAL,
    ) -> Consumer:
        return RabbitConsumer(self, queue, schema, handler, prefetch=prefetch, lane=lane)

    async def queue_states(self) -> dict[str, QueueState]:
        """Ready messages and consumers of every queue, from passive declares
        (cheap, and no management plugin needed)."""
        topology = self.topology
        channel = await self.client.connection.channel(publisher_confirms=False)
        try:
            states = {}
            for name in topology.queues:
                if name in topology.logs:
                    continue  # a stream: its length is not a backlog
                result = (await channel.declare_queue(name, passive=True)).declaration_result
                states[topology.role(name)] = QueueState(
                    result.message_count or 0, result.consumer_count or 0
                )
            return states
        finally:
            if not channel.is_closed:
                await channel.close()

    async def check_message_size(self, size: int) -> None:
        await sizecheck.check_broker_accepts(self.client, size)

    def log(self, name: str) -> Log:
        return StreamLog(self.client, f"{self.topology.prefix}.{name}")

    def membership(self, group: str, *, interval: float) -> Membership:
        return RabbitMembership(self.client, self.topology, group, interval=interval)

    async def heartbeats(self, seconds: float) -> list[mpb.Heartbeat]:
        return await members.listen(self.client, self.topology, seconds)


def _encode(publish: Publish) -> wire.Encoded:
    return wire.encode_items(publish.items)
