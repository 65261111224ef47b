"""The topology on RabbitMQ: quorum queues, a topic exchange, streams.

    <p>.inbound … <p>.local   quorum, x-delivery-limit, dead-letter to <p>.parking
                              (the delivery lanes, <p>.delivery[.<class>], too)
    <p>.bounce                the same, and x-single-active-consumer
    <p>.retry.<delay>         quorum, x-message-ttl, dead-letter to <p>.delivery
    <p>.retry.<delay>.<class> the same, dead-letter to <p>.delivery.<class>
    <p>.parking               quorum
    <p>.events                topic exchange; <p>.bounce bound to failed, expired,
                              delayed, relayed, suppressed
    <p>.suppression, <p>.done streams

The bounce queue has a single active consumer: with several bounce
replicas, one gets every event and the others wait to take over, so the
notices of one message meet in one process and become one DSN
(``bounce/window.py``). A bounce queue declared before that has no such
argument; :func:`declare` is then called with ``single_active_bounce``
off and the queue is used as it is (notices of one message may then be
split between replicas, never lost).

Each lane has rungs of its own, which name their lane in
``x-dead-letter-routing-key``. One set of rungs could serve every lane:
without that argument RabbitMQ dead-letters with the routing keys the
message was published with (its docs, "Routing Dead-Lettered Messages"),
so jobs published to a rung through an exchange, with their lane as the
routing key, would come back to their lane. We do not, because the rungs
from before lanes have the argument (to ``<p>.delivery``) and RabbitMQ
refuses to declare a queue again with other arguments, so such a ladder
would need new names and leave the old rungs behind; and because a job put
on such a rung through the default exchange would carry the rung's own name
as its key, come back to the rung on expiry, and be dropped by RabbitMQ's
cycle detection (a loss, where a named lane can only be misnamed). A lane
costs one quorum queue per distinct delay.

Work queues dead-letter to the parking queue after ``delivery_limit``
deliveries without an ack (a consumer that keeps crashing on a message). All
dead-lettering is at-least-once, so a message moving between queues inside
the broker is never dropped on the way. Every service declares all of it at
start-up; declaring is idempotent as long as the arguments do not change.
"""

from __future__ import annotations

from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from mailyard.broker.topology import BOUNCE_EVENTS, Topology

_QUORUM: FieldTable = {"x-queue-type": "quorum"}
_AT_LEAST_ONCE: FieldTable = {
    "x-dead-letter-exchange": "",
    "x-dead-letter-strategy": "at-least-once",
    # at-least-once dead-lettering requires reject-publish overflow.
    "x-overflow": "reject-publish",
}


def work_queue_arguments(topology: Topology) -> FieldTable:
    return {
        **_QUORUM,
        **_AT_LEAST_ONCE,
        "x-delivery-limit": topology.delivery_limit,
        "x-dead-letter-routing-key": topology.parking,
    }


def bounce_queue_arguments(topology: Topology) -> FieldTable:
    arguments = work_queue_arguments(topology)
    if topology.single_active_bounce:
        arguments["x-single-active-consumer"] = True
    return arguments


def retry_queue_arguments(
    topology: Topology, delay: timedelta, lane: str | None = None
) -> FieldTable:
    """A rung that waits ``delay``, then hands its jobs to ``lane`` (a lane's queue name;
    the transactional lane when None)."""
    return {
        **_QUORUM,
        **_AT_LEAST_ONCE,
        "x-message-ttl": max(1, round(delay.total_seconds() * 1000)),
        "x-dead-letter-routing-key": lane or topology.delivery,
    }


def stream_arguments(max_age: str | None = None) -> FieldTable:
    arguments: FieldTable = {"x-queue-type": "stream"}
    if max_age is not None:
        arguments["x-max-age"] = max_age
    return arguments


# The record of finished delivery jobs is only read back after a crash, for
# jobs redelivered within minutes to hours; a day of it is plenty.
DONE_MAX_AGE = "1D"


async def declare(topology: Topology, channel: AbstractChannel) -> None:
    """Declare everything. Safe to run from every service at every start."""
    await channel.declare_queue(topology.parking, durable=True, arguments=_QUORUM)
    for name in topology.work_queues:
        arguments = (
            bounce_queue_arguments(topology)
            if name == topology.bounce
            else work_queue_arguments(topology)
        )
        await channel.declare_queue(name, durable=True, arguments=arguments)
    for name, delay, lane in topology.rungs:
        await channel.declare_queue(
            name, durable=True, arguments=retry_queue_arguments(topology, delay, lane)
        )
    await channel.declare_queue(topology.suppression, durable=True, arguments=stream_arguments())
    await channel.declare_queue(
        topology.done, durable=True, arguments=stream_arguments(DONE_MAX_AGE)
    )
    events = await channel.declare_exchange(
        topology.events, aio_pika.ExchangeType.TOPIC, durable=True
    )
    # Heartbeats live for seconds: nothing about them is durable.
    await channel.declare_exchange(topology.members, aio_pika.ExchangeType.FANOUT, durable=False)
    bounce = await channel.get_queue(topology.bounce, ensure=False)
    for kind in BOUNCE_EVENTS:
        await bounce.bind(events, routing_key=kind.value)
