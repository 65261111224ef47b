"""Broker plumbing metrics, labelled by service (bounded: four values)."""

from prometheus_client import Counter, Gauge, Histogram

CONNECTED = Gauge(
    "mailyard_broker_connected", "1 while the service has a broker connection", ["service"]
)
RECONNECTS = Counter(
    "mailyard_broker_reconnects_total", "Broker connections re-established", ["service"]
)
PUBLISHED = Counter(
    "mailyard_broker_published_total",
    "Messages published and confirmed by the broker",
    ["service", "exchange"],
)
PUBLISH_FAILURES = Counter(
    "mailyard_broker_publish_failures_total",
    "Publishes the broker did not confirm (unavailable, rejected, timeout)",
    ["service", "reason"],
)
CONSUMED = Counter(
    "mailyard_broker_consumed_total",
    "Messages taken from a work queue, by what became of them",
    ["service", "queue", "outcome"],
)
PARKED = Counter(
    "mailyard_parked_total",
    "Messages moved to the parking queue, by reason",
    ["service", "queue", "reason"],
)
HANDLE_SECONDS = Histogram(
    "mailyard_handle_seconds",
    "Time from taking a message off a work queue to its ack",
    ["service", "queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SKIPPED_FINISHED = Counter(
    "mailyard_broker_skipped_finished_total",
    "Items of a redelivered message left out because the record of finished work holds them",
    ["service", "queue"],
)
UNSUBSCRIBED = Counter(
    "mailyard_events_unsubscribed_total",
    "Times an optional event kind was found with no queue bound, and paused",
    ["service", "kind"],
)
