"""One service's connection to RabbitMQ: connect, declare, publish with confirms.

Every publish is persistent, ``mandatory`` and waits for the broker's confirm;
a nack, a return (unroutable) or a timeout raises :class:`PublishError`. The
connection is aio-pika's robust connection: after a broker restart it
reconnects, re-declares the topology and resumes consumers by itself.
Deliveries that were in flight on the old channel cannot be acked any more;
the broker redelivers them (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from yarl import URL

from mailyard.broker import metrics
from mailyard.broker.port import BrokerUnavailable, PublishError, Unroutable
from mailyard.broker.rabbitmq.declare import declare
from mailyard.broker.rabbitmq.transport import CoalescingConnection, CoalescingTransportFactory
from mailyard.broker.topology import Topology
from mailyard.config import BrokerConfig

log = logging.getLogger(__name__)

DECLARE_ATTEMPTS = 10

Declare = Callable[[Topology, AbstractChannel], Awaitable[None]]


class TopologyMismatch(Exception):
    """A queue or exchange exists with arguments Mailyard would not give it."""


def _older_bounce_queue(topology: Topology, exc: Exception) -> bool:
    """RabbitMQ's refusal to add x-single-active-consumer to an existing bounce queue."""
    text = str(exc)
    return "x-single-active-consumer" in text and f"'{topology.bounce}'" in text


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


class BrokerClient:
    def __init__(
        self,
        config: BrokerConfig,
        topology: Topology,
        *,
        service: str,
        declare_topology: Declare = declare,
    ) -> None:
        self.config = config
        self.topology = topology
        self.service = service
        self._declare = declare_topology
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._closing = False
        self._published: dict[str, Any] = {}
        # Zero series from the start: alerts see the first failure as an increase.
        metrics.RECONNECTS.labels(service)
        for reason in ("unavailable", "timeout", "rejected", "unroutable"):
            metrics.PUBLISH_FAILURES.labels(service, reason)

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerUnavailable("not connected to the broker yet")
        return self._connection

    @property
    def connected(self) -> bool:
        connection = self._connection
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and self._publish_channel is not None
            and not self._publish_channel.is_closed
        )

    async def connect(self, *, attempts: int | None = None) -> None:
        """Connect, retrying every ``reconnect_interval``; then declare the topology.

        ``attempts=None`` retries forever (a service waiting for its broker);
        each failure is one log line saying what to check.
        """
        interval = self.config.reconnect_interval.total_seconds()
        attempt = 0
        while True:
            attempt += 1
            try:
                connection = CoalescingConnection(
                    URL(self.config.url),
                    reconnect_interval=interval,
                    client_properties={"connection_name": f"mailyard-{self.service}"},
                    # amqps:// keeps aiormq's own TLS transport.
                    transport_factory=(
                        CoalescingTransportFactory()
                        if self.config.url.startswith("amqp://")
                        else None
                    ),
                )
                await connection.connect(timeout=max(interval, 5.0))
                self._connection = connection
                break
            except Exception as exc:
                if attempts is not None and attempt >= attempts:
                    raise BrokerUnavailable(self._unreachable(exc)) from exc
                log.warning(self._unreachable(exc), extra={"attempt": attempt})
                await asyncio.sleep(interval)
        self._connection.close_callbacks.add(self._on_close)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await self._declare_topology(self._connection)
        self._exchanges = {
            "": channel.default_exchange,
            self.topology.events: await channel.get_exchange(self.topology.events),
        }
        self._publish_channel = channel
        metrics.CONNECTED.labels(self.service).set(1)
        log.info("connected to broker", extra={"broker": redact(self.config.url)})

    async def _declare_topology(self, connection: AbstractRobustConnection) -> AbstractChannel:
        """Declare everything; retry the race of several services creating a queue at once.

        When processes start together (a deploy, or ``mailyard all``), one may
        see a quorum queue another is still creating: RabbitMQ answers
        NOT_FOUND ("home node ... is down or inaccessible") and closes the
        channel. That resolves itself in moments. PRECONDITION_FAILED does not:
        a queue exists with other arguments, which needs a person — except a
        bounce queue from before single active consumers, used as it is.
        """
        topology = self.topology
        for attempt in range(1, DECLARE_ATTEMPTS + 1):
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                await self._declare(topology, channel)
                return channel
            except aio_pika.exceptions.ChannelPreconditionFailed as exc:
                if topology.single_active_bounce and _older_bounce_queue(topology, exc):
                    log.warning(
                        "the bounce queue predates single active consumers: with several "
                        "bounce replicas the notices of one message may come as several DSNs; "
                        "drain and delete it to have it declared anew",
                        extra={"queue": topology.bounce},
                    )
                    topology = dataclasses.replace(topology, single_active_bounce=False)
                    continue
                raise TopologyMismatch(
                    f"the broker has a Mailyard queue or exchange with other arguments "
                    f"({exc}); this happens when broker.delivery_limit or queue.retry_delays "
                    "changed: drain and delete the old queue, or restore the old setting"
                ) from exc
            except aio_pika.exceptions.ChannelNotFoundEntity as exc:
                if attempt == DECLARE_ATTEMPTS:
                    raise
                log.info("topology not ready yet, declaring again", extra={"error": str(exc)})
                with contextlib.suppress(Exception):
                    await channel.close()
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _unreachable(self, exc: BaseException) -> str:
        return (
            f"RabbitMQ is not reachable at {redact(self.config.url)} "
            f"({type(exc).__name__}: {exc or 'no detail'}); "
            "start it (rabbitmq-server -detached) or set broker.url / MAILYARD_BROKER__URL"
        )

    def _on_close(self, *_: object) -> None:
        metrics.CONNECTED.labels(self.service).set(0)
        if not self._closing:
            log.warning("lost the broker connection; reconnecting")

    def _on_reconnect(self, *_: object) -> None:
        metrics.CONNECTED.labels(self.service).set(1)
        metrics.RECONNECTS.labels(self.service).inc()
        log.info("reconnected to broker")

    async def channel(self, *, prefetch: int) -> AbstractChannel:
        """A new channel for consuming, with its own prefetch window."""
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publish(
        self,
        routing_key: str,
        message: aio_pika.Message,
        *,
        exchange: str = "",
        mandatory: bool = True,
        may_be_unroutable: bool = False,
    ) -> None:
        """Publish and wait for the broker's confirm, or raise PublishError.

        ``may_be_unroutable``: a return (no queue bound) is expected and not
        counted as a failure; the caller still gets :class:`Unroutable`.
        """
        channel = self._publish_channel
        if channel is None or channel.is_closed or not self.connected:
            metrics.PUBLISH_FAILURES.labels(self.service, "unavailable").inc()
            raise BrokerUnavailable("no connection to the broker")
        timeout = self.config.publish_timeout.total_seconds()
        target = self._exchanges[exchange]
        try:
            await target.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=timeout
            )
        except TimeoutError as exc:
            metrics.PUBLISH_FAILURES.labels(self.service, "timeout").inc()
            raise PublishError(f"no confirm for {routing_key!r} within {timeout:g}s") from exc
        except aiormq.exceptions.PublishError as exc:  # returned: no queue bound
            if not may_be_unroutable:
                metrics.PUBLISH_FAILURES.labels(self.service, "unroutable").inc()
            raise Unroutable(f"nothing is bound to {exchange or 'default'}/{routing_key}") from exc
        except Exception as exc:
            metrics.PUBLISH_FAILURES.labels(self.service, "rejected").inc()
            raise PublishError(f"publish to {routing_key!r} failed: {exc!r}") from exc
        counter = self._published.get(exchange)
        if counter is None:
            counter = self._published[exchange] = metrics.PUBLISHED.labels(
                self.service, exchange or "default"
            )
        counter.inc()

    async def delete_topology(self) -> None:
        """Remove every queue and exchange of this prefix (tests and `mailyard purge`)."""
        channel = await self.connection.channel()
        for name in self.topology.queues:
            await channel.queue_delete(name)
        await channel.exchange_delete(self.topology.events)
        await channel.close()

    async def close(self) -> None:
        self._closing = True
        if self._connection is not None:
            await self._connection.close()
        metrics.CONNECTED.labels(self.service).set(0)
