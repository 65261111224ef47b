"""The broker port and its adapters.

Services see the broker only through :class:`~mailyard.broker.port.Broker`
(see ``port.py``). :func:`broker_factory` picks the adapter from
``broker.url``: RabbitMQ for ``amqp://`` and ``amqps://``, the embedded spool
for ``embedded``. Nothing outside this package imports aio-pika.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from mailyard.broker.port import (
    Broker,
    BrokerUnavailable,
    Consumer,
    Emit,
    Handler,
    Log,
    LogEntry,
    Membership,
    MessageSizeMismatch,
    Output,
    Publish,
    PublishError,
    QueueState,
    Unroutable,
    Work,
)
from mailyard.broker.topology import (
    BOUNCE_EVENTS,
    HOLD_DELAYS,
    EventKind,
    QueueName,
    Topology,
)
from mailyard.config import BrokerConfig, Settings

EMBEDDED = "embedded"

BrokerFactory = Callable[[str], Broker]


def topology_for(settings: Settings) -> Topology:
    return Topology(
        prefix=settings.broker.prefix,
        retry_delays=tuple(dict.fromkeys((*settings.queue.retry_delays, *HOLD_DELAYS))),
        delivery_limit=settings.broker.delivery_limit,
        lanes=tuple(settings.queue.classes),
    )


def is_embedded(config: BrokerConfig) -> bool:
    return config.url == EMBEDDED


def broker_factory(settings: Settings) -> BrokerFactory:
    """A function that gives each service (by name) its broker handle.

    On the embedded spool every service of the process shares one spool.
    """
    topology = topology_for(settings)
    if is_embedded(settings.broker):
        from mailyard.broker.embedded.adapter import EmbeddedBroker
        from mailyard.broker.embedded.spool import Spool

        spool = Spool(settings.broker.spool_dir)
        return lambda service: EmbeddedBroker(spool, topology, service=service)
    from mailyard.broker.rabbitmq.adapter import RabbitBroker

    return lambda service: RabbitBroker(settings.broker, topology, service=service)


@contextlib.asynccontextmanager
async def tool_log(settings: Settings, name: str) -> AsyncIterator[Log]:
    """A log for a command that is no service (``mailyard suppression``).

    On RabbitMQ, a connection of its own for as long as the command needs it.
    On the embedded spool, the SQLite file itself, whether or not ``mailyard
    all`` owns it: one short transaction per append, which the running
    process follows within a second (see ``embedded/spool.py``).
    """
    if is_embedded(settings.broker):
        from mailyard.broker.embedded.adapter import OutsideSpoolLog

        yield OutsideSpoolLog(settings.broker.spool_dir, name)
        return
    broker = broker_factory(settings)("cli")
    await broker.connect(attempts=1)
    try:
        yield broker.log(name)
    finally:
        await broker.close()


__all__ = [
    "BOUNCE_EVENTS",
    "EMBEDDED",
    "HOLD_DELAYS",
    "Broker",
    "BrokerFactory",
    "BrokerUnavailable",
    "Consumer",
    "Emit",
    "EventKind",
    "Handler",
    "Log",
    "LogEntry",
    "Membership",
    "MessageSizeMismatch",
    "Output",
    "Publish",
    "PublishError",
    "QueueName",
    "QueueState",
    "Topology",
    "Unroutable",
    "Work",
    "broker_factory",
    "is_embedded",
    "tool_log",
    "topology_for",
]
