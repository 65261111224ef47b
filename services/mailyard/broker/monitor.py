"""Queue depths and consumer counts, as the broker reports them, for dashboards and alerts.

Every Mailyard process polls the broker (passive declares: cheap, no
management plugin needed) and exports the same gauges; dashboards and alerts
take ``max by (queue)``. That way the numbers exist as long as any Mailyard
process runs, including when every consumer of a queue is gone — which is
exactly when the "no consumers" alert must fire.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from mailyard.broker.client import BrokerClient

log = logging.getLogger(__name__)

QUEUE_MESSAGES = Gauge(
    "mailyard_broker_queue_messages",
    "Messages ready in a Mailyard queue (not counting those being worked on)",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "mailyard_broker_queue_consumers", "Consumers attached to a Mailyard queue", ["queue"]
)


class QueueMonitor:
    name = "monitor"

    def __init__(self, client: BrokerClient, interval: float) -> None:
        self.client = client
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self._task = asyncio.create_task(self._poll_forever(), name="queue-monitor")

    def ready(self) -> bool:
        return True  # metrics only: never the reason a pod is taken out of service

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.close()

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # the broker is away: try again next round
                log.debug("queue poll failed: %r", exc)
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        for role, (messages, consumers) in (await read_queue_states(self.client)).items():
            QUEUE_MESSAGES.labels(role).set(messages)
            QUEUE_CONSUMERS.labels(role).set(consumers)


async def read_queue_states(client: BrokerClient) -> dict[str, tuple[int, int]]:
    """(ready messages, consumers) of every Mailyard queue, by role, from passive declares."""
    topology = client.topology
    channel = await client.connection.channel(publisher_confirms=False)
    try:
        states = {}
        for name in topology.queues:
            if name == topology.suppression:
                continue  # a stream: its length is not a backlog
            result = (await channel.declare_queue(name, passive=True)).declaration_result
            states[name.removeprefix(topology.prefix + ".")] = (
                result.message_count or 0,
                result.consumer_count or 0,
            )
        return states
    finally:
        if not channel.is_closed:
            await channel.close()
