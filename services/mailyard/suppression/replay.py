"""Where a replica starts folding the log — pure decisions over records read.

The log is never truncated; what bounds the time a replica takes to start
is the snapshot the bounce service appends every
``suppression.snapshot_interval``. A starting replica reads the last
stretch of the log (``lookback``: two intervals and some), and when a
complete snapshot is in it, loads the snapshot and folds only the records
from a little before its ``covers`` (``MARGIN``, for appenders whose clocks
disagree and for RabbitMQ, which reads a stream from a moment, not an exact
place). Without one (a young log, snapshots turned off, or the bounce
service down for that long) it folds the whole log from the start.

Why folding "from a little before" is right: see ``state.py``.
"""

from __future__ import annotations

from datetime import timedelta

from mailyard.suppression.records import Record, SnapshotPart

# How far before a snapshot's ``covers`` folding starts again. Appenders'
# clocks (and the broker's) may disagree by less than this.
MARGIN = timedelta(minutes=5)


def lookback(snapshot_interval: timedelta) -> timedelta | None:
    """How much of the log's end to search for a snapshot; None: replay it all."""
    if not snapshot_interval:
        return None
    return 2 * snapshot_interval + timedelta(hours=1)


class SnapshotFinder:
    """Fed the records of the log's end in order; keeps the snapshot completed last.

    Only snapshot parts are kept (the other records are folded in a second
    read), and only those of the latest whole snapshot and of any still
    incomplete, so memory stays at about one snapshot.
    """

    def __init__(self) -> None:
        self._partial: dict[str, dict[int, SnapshotPart]] = {}
        self.latest: list[SnapshotPart] | None = None

    def see(self, record: Record | None) -> bool:
        """True when ``record`` completes a snapshot (which is then :attr:`latest`)."""
        if not isinstance(record, SnapshotPart):
            return False
        parts = self._partial.setdefault(record.id, {})
        parts[record.part] = record
        if len(parts) < record.parts:
            return False
        del self._partial[record.id]
        self.latest = [part for _, part in sorted(parts.items())]
        return True
