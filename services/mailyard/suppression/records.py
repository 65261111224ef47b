"""The records of the suppression log, typed, and their protobuf form — no I/O.

The log (``<prefix>.suppression``) is append-only; each entry holds one
``SuppressionRecord`` (``proto/mailyard/v1/suppression.proto``):

- :class:`Added`: an entry for (address, scope), replacing any before it;
- :class:`Removed`: the entry of (address, scope), or all of the address's;
- :class:`Struck`: a message to the address expired (for ``expired_strikes``);
- :class:`SnapshotPart`: part of the whole list at one moment (see ``state.py``).

A record this version cannot read (a newer one's, or garbage) decodes to
None and is skipped: a replica never stops following over one record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from mailyard import wire
from mailyard.suppression.entries import Entry, Source
from mailyard.v1 import suppression_pb2 as spb


@dataclass(frozen=True, slots=True)
class Added:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Removed:
    address: str
    scope: str | None = None
    every_scope: bool = False


@dataclass(frozen=True, slots=True)
class Struck:
    address: str
    key: str  # the expired message's id: the same strike replayed twice counts once
    at: datetime


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    id: str
    part: int  # 1 .. parts
    parts: int
    covers: datetime  # the time stamp of the last log entry folded into the snapshot
    entries: tuple[Entry, ...]
    strikes: tuple[Struck, ...]


Record = Added | Removed | Struck | SnapshotPart

_SOURCES = {
    Source.BOUNCE: spb.SUPPRESSION_SOURCE_BOUNCE,
    Source.COMPLAINT: spb.SUPPRESSION_SOURCE_COMPLAINT,
    Source.UNSUBSCRIBE: spb.SUPPRESSION_SOURCE_UNSUBSCRIBE,
    Source.MANUAL: spb.SUPPRESSION_SOURCE_MANUAL,
}
_SOURCE_OF = {code: source for source, code in _SOURCES.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware datetime, by integer arithmetic: protobuf's own
    ToDatetime costs ~12 us, which was most of the time a replay took."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def encode(record: Record) -> bytes:
    message = spb.SuppressionRecord()
    if isinstance(record, Added):
        message.add.CopyFrom(_entry_message(record.entry))
    elif isinstance(record, Removed):
        message.remove.CopyFrom(
            spb.SuppressionRemoval(
                address=record.address, scope=record.scope or "", every_scope=record.every_scope
            )
        )
    elif isinstance(record, Struck):
        message.strike.CopyFrom(_strike_message(record))
    else:
        message.snapshot.CopyFrom(
            spb.SuppressionSnapshot(
                id=record.id,
                part=record.part,
                parts=record.parts,
                covers=wire.timestamp(record.covers),
                entries=[_entry_message(entry) for entry in record.entries],
                strikes=[_strike_message(strike) for strike in record.strikes],
            )
        )
    return message.SerializeToString()


def decode(data: bytes) -> Record | None:
    """The record, or None when it is not one this version knows."""
    message = spb.SuppressionRecord()
    try:
        message.ParseFromString(data)
        change = message.WhichOneof("change")
        if change == "add":
            return Added(_entry(message.add))
        if change == "remove":
            removal = message.remove
            if not removal.address:
                return None
            return Removed(removal.address, removal.scope or None, removal.every_scope)
        if change == "strike":
            return _strike(message.strike)
        if change == "snapshot":
            snapshot = message.snapshot
            if not snapshot.id or not 1 <= snapshot.part <= snapshot.parts:
                return None
            return SnapshotPart(
                snapshot.id,
                snapshot.part,
                snapshot.parts,
                _moment(snapshot.covers),
                tuple(_entry(entry) for entry in snapshot.entries),
                tuple(_strike(strike) for strike in snapshot.strikes),
            )
    except (DecodeError, ValueError, KeyError):
        return None
    return None


def _entry_message(entry: Entry) -> spb.SuppressionEntry:
    message = spb.SuppressionEntry(
        address=entry.address,
        scope=entry.scope or "",
        reason=entry.reason,
        bounce_class=entry.bounce_class or "",
        source=_SOURCES[entry.source],
        since=wire.timestamp(entry.since),
    )
    if entry.expires is not None:
        message.expires.CopyFrom(wire.timestamp(entry.expires))
    return message


def _entry(message: spb.SuppressionEntry) -> Entry:
    if not message.address:
        raise ValueError("an entry without an address")
    return Entry(
        address=message.address,
        scope=message.scope or None,
        reason=message.reason,
        # A handful of names shared by many entries: one string each.
        bounce_class=sys.intern(message.bounce_class) if message.bounce_class else None,
        source=_SOURCE_OF[message.source],  # KeyError for a source we do not know
        since=_moment(message.since),
        expires=_moment(message.expires) if message.HasField("expires") else None,
    )


def _strike_message(strike: Struck) -> spb.SuppressionStrike:
    return spb.SuppressionStrike(
        address=strike.address, key=strike.key, at=wire.timestamp(strike.at)
    )


def _strike(message: spb.SuppressionStrike) -> Struck:
    if not message.address or not message.key:
        raise ValueError("a strike without an address or key")
    return Struck(message.address, message.key, _moment(message.at))
