"""The suppression list: addresses Mailyard does not send to, shared by every replica.

Job: one list, kept as an append-only log on the broker (the
``<prefix>.suppression`` stream on RabbitMQ, the ``log`` table of the
embedded spool), never a file of one pod. Every queue and bounce process
folds the log into memory at start and follows it (``replica.py``); the
queue service checks each recipient before a message is split into jobs
(one dict lookup, ``state.py``), the bounce service adds hard bounces and
expiry strikes, and ``mailyard suppression list|add|remove|check`` reads and
changes it from anywhere.

- ``entries.py``: an entry (address, scope, reason, class, source, since, expires);
- ``records.py``: the log's records and their protobuf form;
- ``state.py``: folding records into the list, and the lookup;
- ``replay.py``: where a starting replica begins (the latest snapshot);
- ``replica.py``: the thin part that reads, follows and appends to the log.

Security: no network of its own; the log is only as trusted as the broker.

Metrics: ``mailyard_suppression_entries{source}`` (entries in force),
``mailyard_suppression_following{service}``,
``mailyard_suppression_replay_seconds{service}`` and ``_replay_records``
(the cost of a start), ``mailyard_suppression_unreadable_records_total``,
``mailyard_suppression_snapshots_total``; the services count what they do
with it (``mailyard_queue_suppressed_total{source}``,
``mailyard_bounce_suppressions_added_total{source,class}``).

Configuration: ``suppression.*`` (``hard_bounce_expiry``, ``expired_strikes``,
``expired_strikes_window``, ``expired_strikes_expiry``, ``snapshot_interval``).
"""

from mailyard.suppression.entries import Entry, Source, normalize_address, normalize_scope
from mailyard.suppression.records import Added, Record, Removed, SnapshotPart, Struck
from mailyard.suppression.replica import SuppressionReplica
from mailyard.suppression.state import SuppressionState

LOG_NAME = "suppression"  # broker.log(LOG_NAME): <prefix>.suppression

__all__ = [
    "LOG_NAME",
    "Added",
    "Entry",
    "Record",
    "Removed",
    "SnapshotPart",
    "Source",
    "Struck",
    "SuppressionReplica",
    "SuppressionState",
    "normalize_address",
    "normalize_scope",
]
