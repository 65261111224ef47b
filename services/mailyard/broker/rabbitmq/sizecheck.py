"""Start-up check: can the broker hold the largest message we advertise?

RabbitMQ refuses messages over its ``max_message_size`` (16 MiB by default
on 4.x, 128 MiB on 3.x) and does not say what that limit is over AMQP. So we
ask it the only reliable way: publish one unroutable probe of the largest
size ingress could produce, on a throw-away channel. The broker either
confirms it (and drops it: no queue is bound to the probe's key) or closes
the channel with PRECONDITION_FAILED, naming its limit.
"""

from __future__ import annotations

import aio_pika

from mailyard.broker.port import MessageSizeMismatch
from mailyard.broker.rabbitmq.client import BrokerClient


async def check_broker_accepts(client: BrokerClient, size: int) -> None:
    channel = await client.connection.channel(publisher_confirms=True)
    try:
        await channel.default_exchange.publish(
            aio_pika.Message(bytes(size)),
            routing_key=f"{client.topology.prefix}.size-probe",
            mandatory=False,
            timeout=60,
        )
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise MessageSizeMismatch(f"the broker refused a {size}-byte message ({exc})") from exc
    finally:
        if not channel.is_closed:
            await channel.close()
