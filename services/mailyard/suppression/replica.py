"""One process's copy of the suppression list: loaded from the log, kept current.

Every queue and bounce process holds a :class:`SuppressionReplica`. At
start it folds the log (from the latest snapshot when there is one, see
``replay.py``) before the service takes any work, so no message is planned
against a half-read list. Then it follows the log (``Log.read(follow=True)``):
an entry appended by any replica or by ``mailyard suppression add`` is in
every copy within moments. A lost stream is read again from a little before
the last entry seen; folding a stretch twice changes nothing (``state.py``).

Records this process appends (the bounce service's) are folded at once,
after the log has them, so its next decision sees them without waiting for
the stream to bring them back.

The bounce service's replica also writes the snapshots: one every
``suppression.snapshot_interval`` that the log does not already have
(another replica's counts), so that start-up reads a bounded stretch of the
log, not all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from mailyard.broker.port import Log, LogEntry
from mailyard.suppression import metrics
from mailyard.suppression.entries import Source
from mailyard.suppression.records import Record, SnapshotPart, decode, encode
from mailyard.suppression.replay import MARGIN, SnapshotFinder, lookback
from mailyard.suppression.state import SuppressionState

log = logging.getLogger(__name__)

# Entries (and strikes) per snapshot record: ~150 bytes each, so a part
# stays far below any broker's message size limit.
SNAPSHOT_PART_SIZE = 5000


def utc_now() -> datetime:
    return datetime.now(UTC)


class SuppressionReplica:
    def __init__(
        self,
        log: Log,
        *,
        service: str,
        strike_window: timedelta,
        snapshot_interval: timedelta = timedelta(0),
        writes_snapshots: bool = False,
        housekeeping_interval: float = 15.0,
        retry_interval: float = 2.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.log = log
        self.service = service
        self.strike_window = strike_window
        self.snapshot_interval = snapshot_interval
        self.writes_snapshots = writes_snapshots and bool(snapshot_interval)
        self.housekeeping_interval = housekeeping_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self.state = SuppressionState()
        self.last_at: datetime | None = None  # time stamp of the last log entry folded
        self.last_snapshot_at: datetime | None = None  # when the newest snapshot was appended
        self.loaded = False
        # Replicas that start together should not all write the next snapshot.
        self._jitter = random.uniform(0, 0.1)  # noqa: S311 (spreading, not secrecy)
        self._tasks: list[asyncio.Task[None]] = []
        metrics.FOLLOWING.labels(service).set(0)
        for source in Source:
            metrics.ENTRIES.labels(source.value)
        metrics.UNREADABLE.labels(service)

    # --- start-up -------------------------------------------------------------

    async def load(self) -> None:
        """Fold the log as it stands now; returns once the copy is complete."""
        started = time.monotonic()
        window = lookback(self.snapshot_interval)
        records = 0
        snapshot: list[SnapshotPart] | None = None
        if window is not None:
            finder = SnapshotFinder()
            async for entry in self.log.read(self.clock() - window):
                records += 1
                self._note_time(entry)
                if finder.see(decode(entry.data)):
                    self.last_snapshot_at = entry.at
            snapshot = finder.latest
        since: datetime | None = None
        if snapshot is not None:
            self.state.load(snapshot)
            since = snapshot[0].covers - MARGIN
        async for entry in self.log.read(since):
            records += 1
            self._take(entry)
        self.loaded = True
        self.housekeep()
        metrics.REPLAY_SECONDS.labels(self.service).set(time.monotonic() - started)
        metrics.REPLAY_RECORDS.labels(self.service).set(records)
        log.info(
            "suppression list loaded",
            extra={
                "service": self.service,
                "entries": len(self.state),
                "records": records,
                "from_snapshot": snapshot is not None,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def start(self) -> None:
        """Follow the log, and keep house (prune, gauges, snapshots), until :meth:`stop`."""
        self._tasks = [
            asyncio.create_task(self._follow_forever(), name=f"suppression-follow-{self.service}"),
            asyncio.create_task(self._keep_house(), name=f"suppression-house-{self.service}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        metrics.FOLLOWING.labels(self.service).set(0)

    # --- writing --------------------------------------------------------------

    async def append(self, records: Sequence[Record]) -> None:
        """Make ``records`` durable on the log, then fold them here at once.

        Raises the port's PublishError when the log did not take them; then
        nothing is folded, and the caller's input is tried again.
        """
        if not records:
            return
        await self.log.append([encode(record) for record in records])
        for record in records:
            self.state.apply(record)

    async def write_snapshot(self) -> None:
        now = self.clock()
        parts = self.state.snapshot(
            uuid.uuid4().hex, covers=self.last_at or now, now=now, part_size=SNAPSHOT_PART_SIZE
        )
        await self.log.append([encode(part) for part in parts])
        self.last_snapshot_at = now
        metrics.SNAPSHOTS.inc()
        log.info(
            "suppression snapshot written",
            extra={"entries": sum(len(p.entries) for p in parts), "parts": len(parts)},
        )

    def snapshot_due(self, now: datetime) -> bool:
        if not self.writes_snapshots or self.last_at is None:
            return False  # nothing in the log to spare anyone reading
        if self.last_snapshot_at is None:
            return True
        return now - self.last_snapshot_at >= self.snapshot_interval * (1 + self._jitter)

    # --- following --------------------------------------------------------------

    async def _follow_forever(self) -> None:
        while True:
            since = self.last_at - MARGIN if self.last_at is not None else None
            metrics.FOLLOWING.labels(self.service).set(1)
            try:
                async for entry in self.log.read(since, follow=True):
                    self._take(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "lost the suppression log; reading it again",
                    extra={"service": self.service, "error": f"{type(exc).__name__}: {exc}"},
                )
            finally:
                metrics.FOLLOWING.labels(self.service).set(0)
            await asyncio.sleep(self.retry_interval)

    def _take(self, entry: LogEntry) -> None:
        self._note_time(entry)
        record = decode(entry.data)
        if record is None:
            metrics.UNREADABLE.labels(self.service).inc()
            return
        if isinstance(record, SnapshotPart):
            if record.part == record.parts:
                self.last_snapshot_at = entry.at
            return
        self.state.apply(record)

    def _note_time(self, entry: LogEntry) -> None:
        if self.last_at is None or entry.at > self.last_at:
            self.last_at = entry.at

    # --- housekeeping -------------------------------------------------------------

    def housekeep(self) -> None:
        """Drop what no longer applies and set the gauges."""
        now = self.clock()
        self.state.prune(now, strikes_before=now - self.strike_window)
        counts = self.state.counts(now)
        for source in Source:
            metrics.ENTRIES.labels(source.value).set(counts.get(source, 0))

    async def _keep_house(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_interval)
            self.housekeep()
            if self.snapshot_due(self.clock()):
                try:
                    await self.write_snapshot()
                except Exception as exc:  # the next round tries again
                    log.warning(
                        "could not write a suppression snapshot",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
