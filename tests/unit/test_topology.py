"""Topology: queue names under the prefix and their arguments."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from mailyard.broker.rabbitmq.declare import (
    bounce_queue_arguments,
    retry_queue_arguments,
    work_queue_arguments,
)
from mailyard.broker.topology import BOUNCE_EVENTS, EventKind, QueueName, Topology

LADDER = (
    timedelta(minutes=5),
    timedelta(minutes=10),
    timedelta(seconds=600),  # the same as 10m: one queue
    timedelta(minutes=90),
    timedelta(seconds=1.5),
)


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix="test-1", retry_delays=LADDER, delivery_limit=7)


def test_names_are_under_the_prefix(topology):
    assert topology.inbound == "test-1.inbound"
    assert topology.delivery == "test-1.delivery"
    assert topology.deferred == "test-1.deferred"
    assert topology.bounce == "test-1.bounce"
    assert topology.local == "test-1.local"
    assert topology.parking == "test-1.parking"
    assert topology.events == "test-1.events"
    assert topology.suppression == "test-1.suppression"


def test_retry_queue_names_use_canonical_durations(topology):
    assert topology.retry_queue(timedelta(minutes=5)) == "test-1.retry.5m"
    assert topology.retry_queue(timedelta(seconds=300)) == "test-1.retry.5m"
    assert topology.retry_queue(timedelta(hours=1, minutes=30)) == "test-1.retry.1h30m"
    assert topology.retry_queue(timedelta(days=1)) == "test-1.retry.1d"
    assert topology.retry_queue(timedelta(milliseconds=1500)) == "test-1.retry.1s500ms"


def test_duplicate_delays_collapse_into_one_queue(topology):
    assert topology.retry_queues == (
        "test-1.retry.5m",
        "test-1.retry.10m",
        "test-1.retry.1h30m",
        "test-1.retry.1s500ms",
    )


def test_every_queue_is_listed_once(topology):
    assert topology.work_queues == (
        "test-1.inbound",
        "test-1.delivery",
        "test-1.deferred",
        "test-1.bounce",
        "test-1.local",
    )
    assert topology.queues == (
        *topology.work_queues,
        *topology.retry_queues,
        "test-1.parking",
        "test-1.suppression",
        "test-1.done",
    )
    assert topology.logs == ("test-1.suppression", "test-1.done")
    assert topology.work_queues == tuple(topology.queue(role) for role in QueueName)
    assert len(set(topology.queues)) == len(topology.queues)
    assert all(name.startswith("test-1.") for name in topology.queues)


def test_prefixes_keep_installs_apart():
    a = Topology(prefix="a", retry_delays=LADDER, delivery_limit=7)
    b = Topology(prefix="b", retry_delays=LADDER, delivery_limit=7)
    assert set(a.queues).isdisjoint(b.queues)


def test_work_queue_arguments(topology):
    assert work_queue_arguments(topology) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "test-1.parking",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@pytest.mark.parametrize(
    ("delay", "ttl"),
    [
        (timedelta(minutes=5), 300_000),
        (timedelta(minutes=90), 5_400_000),
        (timedelta(seconds=1.5), 1500),
        (timedelta(milliseconds=1), 1),
        (timedelta(microseconds=100), 1),  # never 0 (which would mean: no wait)
    ],
)
def test_retry_queue_arguments(topology, delay, ttl):
    arguments = retry_queue_arguments(topology, delay)
    assert arguments == {
        "x-queue-type": "quorum",
        "x-message-ttl": ttl,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "test-1.delivery",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert isinstance(arguments["x-message-ttl"], int)


def test_arguments_are_fresh_copies(topology):
    first = work_queue_arguments(topology)
    first["x-queue-type"] = "classic"
    assert work_queue_arguments(topology)["x-queue-type"] == "quorum"
    assert retry_queue_arguments(topology, timedelta(minutes=5))["x-queue-type"] == "quorum"


def test_role_is_the_name_without_the_prefix(topology):
    assert topology.role("test-1.retry.5m") == "retry.5m"
    assert topology.role(topology.delivery) == "delivery"


def test_bounce_events():
    assert BOUNCE_EVENTS == (
        EventKind.FAILED,
        EventKind.EXPIRED,
        EventKind.DELAYED,
        EventKind.RELAYED,
        EventKind.SUPPRESSED,
    )
    assert [k.value for k in EventKind] == [
        "delivered",
        "deferred",
        "failed",
        "expired",
        "bounced",
        "complained",
        "delayed",
        "relayed",
        "suppressed",
    ]


def test_the_bounce_queue_has_one_active_consumer(topology):
    """One process sees every notice of a message, so they become one DSN."""
    assert bounce_queue_arguments(topology) == {
        **work_queue_arguments(topology),
        "x-single-active-consumer": True,
    }


def test_a_bounce_queue_from_before_is_used_as_it_is(topology):
    older = dataclasses.replace(topology, single_active_bounce=False)
    assert bounce_queue_arguments(older) == work_queue_arguments(older)
