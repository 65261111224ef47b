"""Heartbeats on RabbitMQ: a fanout exchange, and one exclusive queue per listener.

Each delivery process publishes a :class:`~mailyard.v1.members_pb2.Heartbeat`
to ``<prefix>.members`` every interval, without confirms and with a
per-message TTL of the expiry (a beat nobody took in time is worthless), and
reads everyone's beats from a queue of its own, exclusive and auto-deleted,
so it disappears with the process. The channel is aio-pika's robust one: after
a reconnect the queue, its binding and the consumer come back by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from mailyard.broker.members import EXPIRY_BEATS, MemberTable
from mailyard.broker.rabbitmq.client import BrokerClient
from mailyard.broker.topology import Topology
from mailyard.v1 import members_pb2 as mpb

log = logging.getLogger(__name__)


class RabbitMembership:
    def __init__(
        self, client: BrokerClient, topology: Topology, group: str, *, interval: float
    ) -> None:
        self.client = client
        self.topology = topology
        self.group = group
        self.interval = interval
        self.me = secrets.token_hex(8)
        self.table = MemberTable(self.me, interval=interval, now=time.monotonic())
        self._changed: list[Callable[[], None]] = []
        self._beat: Callable[[], mpb.Heartbeat] = mpb.Heartbeat
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return self.table.count

    @property
    def rank(self) -> int:
        return self.table.rank

    def on_change(self, callback: Callable[[], None]) -> None:
        self._changed.append(callback)

    async def start(self, beat: Callable[[], mpb.Heartbeat]) -> None:
        """Join; returns after listening for one and a half beats, so that the
        others have counted us in and we them before we take a share."""
        self._beat = beat
        channel = self._channel = await self.client.connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(self.topology.members)
        queue = await channel.declare_queue(
            f"{self.topology.members}.{self.me}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange)
        await queue.consume(self._on_beat, no_ack=True)
        self._task = asyncio.create_task(self._beat_forever(), name="membership-heartbeat")
        await asyncio.sleep(1.5 * self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._send(leaving=True)  # count us out now, not after the expiry
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self._send()
            except Exception as exc:  # the broker is away: the table sees that we went quiet
                log.debug("heartbeat not sent", extra={"reason": repr(exc)})
            if self.table.expire(time.monotonic()):
                self._notify()
            await asyncio.sleep(self.interval)

    async def _send(self, *, leaving: bool = False) -> None:
        if self._channel is None or self._channel.is_closed:
            return
        beat = self._beat()
        beat.member = self.me
        beat.group = self.group
        beat.sent_at.GetCurrentTime()
        beat.leaving = leaving
        exchange = await self._channel.get_exchange(self.topology.members, ensure=False)
        await exchange.publish(
            aio_pika.Message(beat.SerializeToString(), expiration=EXPIRY_BEATS * self.interval),
            routing_key="",
        )

    async def _on_beat(self, message: AbstractIncomingMessage) -> None:
        beat = mpb.Heartbeat()
        try:
            beat.ParseFromString(message.body)
        except Exception:
            log.warning("ignored a heartbeat that is not one", extra={"size": len(message.body)})
            return
        if beat.group == self.group and self.table.heard(beat, time.monotonic()):
            self._notify()

    def _notify(self) -> None:
        log.info("delivery members changed", extra={"members": self.count, "rank": self.rank})
        for callback in self._changed:
            callback()


async def listen(client: BrokerClient, topology: Topology, seconds: float) -> list[mpb.Heartbeat]:
    """The latest beat of every member heard within ``seconds`` (for ``mailyard status``)."""
    heard: dict[str, mpb.Heartbeat] = {}
    channel = await client.connection.channel(publisher_confirms=False)
    try:
        exchange = await channel.get_exchange(topology.members)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)

        async def take(message: AbstractIncomingMessage) -> None:
            beat = mpb.Heartbeat()
            with contextlib.suppress(Exception):
                beat.ParseFromString(message.body)
                if beat.leaving:
                    heard.pop(beat.member, None)
                else:
                    heard[beat.member] = beat

        await queue.consume(take, no_ack=True)
        await asyncio.sleep(seconds)
    finally:
        if not channel.is_closed:
            await channel.close()
    return sorted(heard.values(), key=lambda b: (b.hostname, b.member))
