"""RabbitMQ plumbing shared by every service: topology, confirmed publishing, consuming."""

from mailyard.broker.client import BrokerClient, BrokerUnavailable, PublishError, Unroutable
from mailyard.broker.consumer import BatchConsumer, Consumer, Delivery, QueueConsumer
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind, Topology

__all__ = [
    "BOUNCE_EVENTS",
    "BatchConsumer",
    "BrokerClient",
    "BrokerUnavailable",
    "Consumer",
    "Delivery",
    "EventKind",
    "PublishError",
    "QueueConsumer",
    "Topology",
    "Unroutable",
]
