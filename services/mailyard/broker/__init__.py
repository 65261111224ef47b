"""RabbitMQ plumbing shared by every service: topology, confirmed publishing, consuming."""

from mailyard.broker.client import BrokerClient, BrokerUnavailable, PublishError, Unroutable
from mailyard.broker.consumer import Consumer, Delivery
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind, Topology

__all__ = [
    "BOUNCE_EVENTS",
    "BrokerClient",
    "BrokerUnavailable",
    "Consumer",
    "Delivery",
    "EventKind",
    "PublishError",
    "Topology",
    "Unroutable",
]
