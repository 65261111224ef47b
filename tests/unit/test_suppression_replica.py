"""A process's copy of the suppression list on the in-memory log: load, follow, snapshot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mailyard.broker.memory import MemoryBroker, MemoryLog
from mailyard.broker.port import LogEntry, PublishError
from mailyard.suppression import metrics
from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, Removed, SnapshotPart, Struck, decode, encode
from mailyard.suppression.replay import MARGIN
from mailyard.suppression.replica import SuppressionReplica

NOW = datetime.now(UTC)


def entry(address: str = "bob@example.com", **changes) -> Entry:
    fields = {
        "address": address,
        "scope": None,
        "reason": "550 5.1.1",
        "bounce_class": "InvalidRecipient",
        "source": Source.BOUNCE,
        "since": NOW,
        "expires": None,
    }
    return Entry(**(fields | changes))


def memory_log() -> MemoryLog:
    return MemoryBroker().log("suppression")


def replica(log: MemoryLog, **options) -> SuppressionReplica:
    options.setdefault("strike_window", timedelta(days=30))
    return SuppressionReplica(log, service="test", **options)


def at(log: MemoryLog, moment: datetime, *records) -> None:
    """Records appended at ``moment`` (as a log long in use would hold them)."""
    log.entries.extend(LogEntry(moment, encode(record)) for record in records)


async def eventually(predicate) -> None:
    for _ in range(200):  # 2 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_load_folds_the_whole_log_without_a_snapshot():
    log = memory_log()
    at(log, NOW - timedelta(days=400), Added(entry("old@example.com")))
    at(log, NOW - timedelta(days=1), Added(entry()), Removed("old@example.com", every_scope=True))
    at(log, NOW, Added(entry("new@example.com")))
    copy = replica(log, snapshot_interval=timedelta(days=1))
    await copy.load()
    assert [e.address for e in copy.state.active(NOW)] == ["bob@example.com", "new@example.com"]
    assert copy.last_at == NOW
    # The last two days and some (3, looking for a snapshot), then the whole log (4).
    assert metrics.REPLAY_RECORDS.labels("test")._value.get() == 7


async def test_load_starts_from_the_latest_snapshot():
    log = memory_log()
    covers = NOW - timedelta(hours=6)
    # Long before the snapshot: folded into it, and contradicted by it (removed
    # later); a replica that folded these again would get them wrong.
    at(log, covers - timedelta(days=300), Added(entry("gone@example.com")))
    at(log, covers - MARGIN - timedelta(seconds=1), Added(entry("stale@example.com")))
    # The snapshot says: only bob. Its own covers is the time of the last entry it folded.
    at(
        log,
        covers + timedelta(seconds=2),
        SnapshotPart("s1", 1, 2, covers, (entry(),), ()),
        SnapshotPart("s1", 2, 2, covers, (), (Struck("slow@example.com", "m1", covers),)),
    )
    # After: folded again from covers - MARGIN on.
    at(log, covers - timedelta(seconds=1), Added(entry("racing@example.com")))  # a late clock
    at(log, NOW, Removed("bob@example.com", every_scope=True), Added(entry("new@example.com")))
    copy = replica(log, snapshot_interval=timedelta(days=1))
    await copy.load()
    assert [e.address for e in copy.state.active(NOW)] == [
        "new@example.com",
        "racing@example.com",
    ]
    assert copy.state.strikes("slow@example.com", since=covers - timedelta(days=1)) == 1
    assert copy.last_snapshot_at == covers + timedelta(seconds=2)


async def test_an_incomplete_snapshot_is_not_used():
    log = memory_log()
    at(log, NOW - timedelta(days=10), Added(entry("kept@example.com")))
    at(log, NOW - timedelta(hours=1), SnapshotPart("s1", 1, 2, NOW, (), ()))  # part 2 never came
    copy = replica(log, snapshot_interval=timedelta(days=1))
    await copy.load()
    assert [e.address for e in copy.state.active(NOW)] == ["kept@example.com"]


async def test_a_snapshot_older_than_the_lookback_is_not_loaded():
    log = memory_log()
    old = NOW - timedelta(days=5)
    # A snapshot that disagrees with the log: loading it would show.
    at(log, old, SnapshotPart("s1", 1, 1, old, (entry("phantom@example.com"),), ()))
    at(log, NOW - timedelta(days=4), Added(entry()))
    copy = replica(log, snapshot_interval=timedelta(days=1))
    await copy.load()
    assert [e.address for e in copy.state.active(NOW)] == ["bob@example.com"]
    assert copy.last_snapshot_at == old  # seen on the way: the next one is due
    assert copy.snapshot_due(NOW) is False  # only the bounce service writes them


async def test_following_brings_every_new_record():
    log = memory_log()
    copy = replica(log)
    await copy.load()
    copy.start()
    try:
        other = replica(log)  # another replica, or the command line
        await other.append([Added(entry())])
        await eventually(lambda: copy.state.lookup("bob@example.com", "", NOW) is not None)
        await log.append([b"garbage from a newer version"])
        await other.append([Removed("bob@example.com", every_scope=True)])
        await eventually(lambda: not copy.state)
        assert metrics.UNREADABLE.labels("test")._value.get() >= 1
        assert metrics.FOLLOWING.labels("test")._value.get() == 1
    finally:
        await copy.stop()
    assert metrics.FOLLOWING.labels("test")._value.get() == 0


async def test_a_lost_log_is_read_again_from_a_little_before():
    log = memory_log()
    reads: list[datetime | None] = []
    real_read = log.read

    def failing_once(since=None, *, follow=False):
        reads.append(since)
        if follow and len(reads) == 2:  # the first follow (after the load's read)
            raise_in = real_read(since, follow=follow)

            async def broken():
                async for item in raise_in:
                    yield item
                    raise ConnectionError("stream gone")

            return broken()
        return real_read(since, follow=follow)

    log.read = failing_once  # type: ignore[method-assign]
    at(log, NOW, Added(entry()))
    copy = replica(log, retry_interval=0.01)
    await copy.load()
    copy.start()
    try:
        await eventually(lambda: len(reads) >= 3)
        assert reads[2] == NOW - MARGIN
        await replica(log).append([Added(entry("later@example.com"))])
        await eventually(lambda: len(copy.state) == 2)
    finally:
        await copy.stop()


async def test_own_records_are_folded_once_the_log_has_them():
    log = memory_log()
    copy = replica(log)
    await copy.load()
    await copy.append([Added(entry())])
    assert copy.state.lookup("bob@example.com", "", NOW) is not None  # before any follow
    assert [decode(e.data) for e in log.entries] == [Added(entry())]
    log.fail_with = PublishError("stream unavailable")
    with pytest.raises(PublishError):
        await copy.append([Added(entry("second@example.com"))])
    assert copy.state.lookup("second@example.com", "", NOW) is None  # not on the log: not here


async def test_the_writer_snapshots_when_none_is_recent():
    log = memory_log()
    clock = [NOW]
    copy = replica(
        log, snapshot_interval=timedelta(days=1), writes_snapshots=True, clock=lambda: clock[0]
    )
    await copy.load()
    assert copy.snapshot_due(NOW) is False  # an empty log: nothing to spare anyone
    await copy.append([Added(entry())])
    log.entries[-1] = LogEntry(NOW, log.entries[-1].data)
    copy._take(log.entries[-1])  # as the follow would
    assert copy.snapshot_due(NOW) is True  # a log without any snapshot
    await copy.write_snapshot()
    [part] = [decode(e.data) for e in log.entries if isinstance(decode(e.data), SnapshotPart)]
    assert part.covers == NOW
    assert [e.address for e in part.entries] == ["bob@example.com"]
    assert copy.snapshot_due(NOW + timedelta(hours=23)) is False
    assert copy.snapshot_due(NOW + timedelta(days=1, hours=3)) is True

    reader = replica(log, snapshot_interval=timedelta(days=1))
    await reader.load()
    assert [e.address for e in reader.state.active(NOW)] == ["bob@example.com"]


async def test_housekeeping_sets_the_gauges_and_drops_expired_entries():
    log = memory_log()
    clock = [NOW]
    at(
        log,
        NOW,
        Added(entry(expires=NOW + timedelta(seconds=5))),
        Added(entry("m@example.com", source=Source.MANUAL)),
    )
    copy = replica(log, clock=lambda: clock[0])
    await copy.load()
    assert metrics.ENTRIES.labels("bounce")._value.get() == 1
    assert metrics.ENTRIES.labels("manual")._value.get() == 1
    clock[0] = NOW + timedelta(seconds=5)
    copy.housekeep()
    assert metrics.ENTRIES.labels("bounce")._value.get() == 0
    assert len(copy.state) == 1
