"""The RabbitMQ topology: every queue and exchange Mailyard uses, by name.

All names start with the configured prefix so that several installs (or test
runs) can share one broker. Every service declares the whole topology at
start-up; declaring is idempotent as long as the arguments do not change.

    <p>.inbound        quorum   accepted messages (ingress, bounce → queue)
    <p>.delivery       quorum   delivery jobs (queue, retry ladder → delivery)
    <p>.deferred       quorum   attempts that ended in a 4xx (delivery → queue)
    <p>.retry.<delay>  quorum   TTL queues; expired jobs dead-letter to <p>.delivery
    <p>.bounce         quorum   failed/expired events (events → bounce)
    <p>.local          quorum   mail for ingress.local_domains (queue → bounce)
    <p>.parking        quorum   poison and undecodable messages, with reason headers
    <p>.events         topic    delivered / deferred / failed / expired
    <p>.suppression    stream   suppression list changes

Work queues dead-letter to the parking queue after ``delivery_limit``
deliveries without an ack (a consumer that keeps crashing on a message). All
dead-lettering is at-least-once, so a message moving between queues inside
the broker is never dropped on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import aio_pika
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from mailyard.durations import format_duration


class EventKind(StrEnum):
    """Routing keys on the events exchange."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    EXPIRED = "expired"


# Events that a DSN depends on: published mandatory, consumed by bounce.
BOUNCE_EVENTS = (EventKind.FAILED, EventKind.EXPIRED)

_QUORUM: FieldTable = {"x-queue-type": "quorum"}
_AT_LEAST_ONCE: FieldTable = {
    "x-dead-letter-exchange": "",
    "x-dead-letter-strategy": "at-least-once",
    # at-least-once dead-lettering requires reject-publish overflow.
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class Topology:
    prefix: str
    retry_delays: tuple[timedelta, ...]
    delivery_limit: int

    @property
    def inbound(self) -> str:
        return f"{self.prefix}.inbound"

    @property
    def delivery(self) -> str:
        return f"{self.prefix}.delivery"

    @property
    def deferred(self) -> str:
        return f"{self.prefix}.deferred"

    @property
    def bounce(self) -> str:
        return f"{self.prefix}.bounce"

    @property
    def local(self) -> str:
        return f"{self.prefix}.local"

    @property
    def parking(self) -> str:
        return f"{self.prefix}.parking"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def suppression(self) -> str:
        return f"{self.prefix}.suppression"

    def retry_queue(self, delay: timedelta) -> str:
        return f"{self.prefix}.retry.{format_duration(delay)}"

    @property
    def work_queues(self) -> tuple[str, ...]:
        return (self.inbound, self.delivery, self.deferred, self.bounce, self.local)

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.retry_queue(d) for d in self.retry_delays))

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue (and the stream), for listing and for cleaning up."""
        return (*self.work_queues, *self.retry_queues, self.parking, self.suppression)

    def work_queue_arguments(self) -> FieldTable:
        return {
            **_QUORUM,
            **_AT_LEAST_ONCE,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-routing-key": self.parking,
        }

    def retry_queue_arguments(self, delay: timedelta) -> FieldTable:
        return {
            **_QUORUM,
            **_AT_LEAST_ONCE,
            "x-message-ttl": max(1, round(delay.total_seconds() * 1000)),
            "x-dead-letter-routing-key": self.delivery,
        }

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare everything. Safe to run from every service at every start."""
        await channel.declare_queue(self.parking, durable=True, arguments=_QUORUM)
        for name in self.work_queues:
            await channel.declare_queue(name, durable=True, arguments=self.work_queue_arguments())
        for delay in dict.fromkeys(self.retry_delays):
            await channel.declare_queue(
                self.retry_queue(delay), durable=True, arguments=self.retry_queue_arguments(delay)
            )
        await channel.declare_queue(
            self.suppression, durable=True, arguments={"x-queue-type": "stream"}
        )
        events = await channel.declare_exchange(
            self.events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        bounce = await channel.get_queue(self.bounce, ensure=False)
        for kind in BOUNCE_EVENTS:
            await bounce.bind(events, routing_key=kind.value)
