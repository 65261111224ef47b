"""The life of a service whose work arrives on queues: connect, consume, drain."""

from __future__ import annotations

from mailyard.broker.port import Broker, Consumer


class ConsumingService:
    """Base for queue, delivery and bounce; subclasses say what they consume."""

    name: str

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._consumers: list[Consumer] = []

    def consumers(self) -> list[Consumer]:
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
