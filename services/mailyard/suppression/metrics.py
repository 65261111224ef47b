"""Suppression list metrics, set by every process that holds a copy of the list
(queue and bounce). Labels are bounded: four sources, two services."""

from prometheus_client import Counter, Gauge

ENTRIES = Gauge(
    "mailyard_suppression_entries",
    "Entries of the suppression list in force, by source (every replica holds the same list)",
    ["source"],  # bounce | complaint | unsubscribe | manual
)
FOLLOWING = Gauge(
    "mailyard_suppression_following",
    "1 while the service follows the suppression log (changes reach it within seconds)",
    ["service"],
)
REPLAY_SECONDS = Gauge(
    "mailyard_suppression_replay_seconds",
    "How long the last start-up took to fold the suppression log (bounded by snapshots)",
    ["service"],
)
REPLAY_RECORDS = Gauge(
    "mailyard_suppression_replay_records",
    "Log records folded at the last start-up (snapshot parts included)",
    ["service"],
)
UNREADABLE = Counter(
    "mailyard_suppression_unreadable_records_total",
    "Suppression log records skipped because this version cannot read them",
    ["service"],
)
SNAPSHOTS = Counter(
    "mailyard_suppression_snapshots_total",
    "Snapshots of the suppression list appended to its log (by the bounce service)",
)
