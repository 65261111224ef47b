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


# --- lanes ------------------------------------------------------------------


@pytest.fixture
def lanes() -> Topology:
    return Topology("p", (timedelta(minutes=5), timedelta(hours=1)), 7, lanes=("bulk", "news"))


def test_the_transactional_lane_keeps_the_names_from_before_lanes(lanes):
    """Jobs queued before lanes, and what watches <p>.delivery, carry on."""
    assert lanes.lanes == ("transactional", "bulk", "news")
    assert lanes.delivery == lanes.lane_queue("transactional") == "p.delivery"
    assert lanes.queue(QueueName.DELIVERY) == "p.delivery"
    assert lanes.retry_queue(timedelta(minutes=5)) == "p.retry.5m"
    assert lanes.retry_queue(timedelta(minutes=5), "transactional") == "p.retry.5m"


def test_every_other_class_has_a_lane_and_rungs_of_its_own(lanes):
    assert lanes.queue(QueueName.DELIVERY, "bulk") == "p.delivery.bulk"
    assert lanes.retry_queue(timedelta(hours=1), "news") == "p.retry.1h.news"
    assert lanes.work_queues == (
        "p.inbound",
        "p.delivery",
        "p.delivery.bulk",
        "p.delivery.news",
        "p.deferred",
        "p.bounce",
        "p.local",
    )
    assert lanes.rungs == (
        ("p.retry.5m", timedelta(minutes=5), "p.delivery"),
        ("p.retry.1h", timedelta(hours=1), "p.delivery"),
        ("p.retry.5m.bulk", timedelta(minutes=5), "p.delivery.bulk"),
        ("p.retry.1h.bulk", timedelta(hours=1), "p.delivery.bulk"),
        ("p.retry.5m.news", timedelta(minutes=5), "p.delivery.news"),
        ("p.retry.1h.news", timedelta(hours=1), "p.delivery.news"),
    )
    assert len(set(lanes.queues)) == len(lanes.queues)
    assert lanes.role("p.retry.5m.bulk") == "retry.5m.bulk"


@pytest.mark.parametrize("mail_class", ["", "gone", "Bulk"])
def test_a_class_without_a_lane_is_transactional(lanes, mail_class):
    """Empty on a job from before classes, or removed from queue.classes meanwhile."""
    assert lanes.lane(mail_class) == "transactional"
    assert lanes.lane_queue(mail_class) == "p.delivery"
    assert lanes.retry_queue(timedelta(minutes=5), mail_class) == "p.retry.5m"


def test_a_lane_s_rungs_hand_their_jobs_back_to_it(lanes):
    for name, delay, lane in lanes.rungs:
        arguments = retry_queue_arguments(lanes, delay, lane)
        assert arguments["x-dead-letter-routing-key"] == lane, name
        assert arguments["x-dead-letter-exchange"] == ""
    assert retry_queue_arguments(lanes, timedelta(minutes=5))["x-dead-letter-routing-key"] == (
        "p.delivery"
    )
