"""Queue depths and consumer counts, as the broker reports them, for dashboards and alerts.

Every Mailyard process polls its broker and exports the same gauges;
dashboards and alerts take ``max by (queue)``. That way the numbers exist as
long as any Mailyard process runs, including when every consumer of a queue
is gone — which is exactly when the "no consumers" alert must fire. On the
embedded spool the numbers come from the spool's own index.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from mailyard.broker.port import Broker

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

    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.broker.connect()
        self._task = asyncio.create_task(self._poll_forever(), name="queue-monitor")

    def ready(self) -> bool:
        return True  # metrics only: never the reason a pod is taken out of service

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.broker.close()

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # the broker is away: try again next round
                log.debug("queue poll failed: %r", exc)
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        for role, state in (await self.broker.queue_states()).items():
            QUEUE_MESSAGES.labels(role).set(state.messages)
            QUEUE_CONSUMERS.labels(role).set(state.consumers)
