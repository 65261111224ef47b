"""The life of a service whose work arrives on queues: connect, consume, drain."""

from __future__ import annotations

from typing import Any

from mailyard.broker.client import BrokerClient
from mailyard.broker.consumer import QueueConsumer
from mailyard.broker.topology import Topology
from mailyard.config import BrokerConfig


class ConsumingService:
    """Base for queue, delivery and bounce; subclasses say what they consume."""

    name: str

    def __init__(self, broker_config: BrokerConfig, topology: Topology) -> None:
        self.broker = BrokerClient(broker_config, topology, service=self.name)
        self._consumers: list[QueueConsumer[Any]] = []

    def consumers(self) -> list[QueueConsumer[Any]]:
        raise NotImplementedError

    async def started(self) -> None:
        """Hook: after the broker connection, before consuming."""

    async def stopped(self) -> None:
        """Hook: after in-flight work is done, before disconnecting."""

    async def start(self) -> None:
        await self.broker.connect()
        await self.started()
        self._consumers = self.consumers()
        for consumer in self._consumers:
            await consumer.start()

    def ready(self) -> bool:
        return self.broker.connected and bool(self._consumers)

    async def stop(self, grace: float) -> None:
        for consumer in self._consumers:
            await consumer.stop(grace)
        await self.stopped()
        await self.broker.close()
