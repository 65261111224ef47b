"""The suppression list as it stands: the log's records folded into a map — no I/O.

Theory of operation. Every replica (queue and bounce processes, the CLI)
replays the same append-only log and folds each record into a
:class:`SuppressionState`. Each record replaces what it touches:

- ``Added`` sets the entry of (address, scope) and forgets the address's strikes;
- ``Removed`` deletes one entry (or all of an address's) and its strikes;
- ``Struck`` adds one key to the address's strikes (a set: a key twice is one).

Applying a stretch of the log a second time over a state that already holds
it changes nothing: for each address and scope the last record in log order
wins either way, and strikes are a set. That is what lets a replica follow
the log "from a little before where it was" (RabbitMQ streams are read from
a moment, not an exact place), apply its own records before it reads them
back, and start from a snapshot and then fold the log from just before the
snapshot's ``covers``.

Nothing is done when an entry expires: :meth:`lookup` ignores it from that
moment, and :meth:`prune` drops it later to free the memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, Record, Removed, SnapshotPart, Struck


class SuppressionState:
    def __init__(self) -> None:
        # address → scope (None: every sender) → entry. Nearly every address
        # has one entry; the inner dict keeps the lookup to two dict gets.
        self._entries: dict[str, dict[str | None, Entry]] = {}
        self._strikes: dict[str, dict[str, datetime]] = {}  # address → key → when

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return sum(len(scopes) for scopes in self._entries.values())

    # --- folding ---------------------------------------------------------------

    def apply(self, record: Record) -> None:
        if isinstance(record, Added):
            entry = record.entry
            self._entries.setdefault(entry.address, {})[entry.scope] = entry
            self._strikes.pop(entry.address, None)
        elif isinstance(record, Removed):
            if record.every_scope:
                self._entries.pop(record.address, None)
            else:
                scopes = self._entries.get(record.address)
                if scopes is not None:
                    scopes.pop(record.scope, None)
                    if not scopes:
                        del self._entries[record.address]
            self._strikes.pop(record.address, None)
        elif isinstance(record, Struck):
            self._strikes.setdefault(record.address, {})[record.key] = record.at
        # A SnapshotPart changes nothing for a replica already following:
        # it restates what the replica has (see load()).

    def load(self, parts: Iterable[SnapshotPart]) -> None:
        """Replace everything with a snapshot's parts (all of one snapshot)."""
        self._entries.clear()
        self._strikes.clear()
        for part in parts:
            for entry in part.entries:
                self._entries.setdefault(entry.address, {})[entry.scope] = entry
            for strike in part.strikes:
                self._strikes.setdefault(strike.address, {})[strike.key] = strike.at

    # --- the decision ----------------------------------------------------------

    def lookup(self, address: str, sender_domain: str, now: datetime) -> Entry | None:
        """The entry that keeps mail from ``sender_domain`` away from ``address``, if any.

        ``address`` is spelled as :func:`~mailyard.suppression.entries.normalize_address`
        spells it (as the queue's split does); ``sender_domain`` is the
        envelope sender's, lower case ("" for the null sender: only entries
        for every sender apply). The hot path: one dict lookup per recipient.
        """
        scopes = self._entries.get(address)
        if scopes is None:
            return None
        entry = scopes.get(None)
        if entry is not None and entry.applies_at(now):
            return entry
        if sender_domain:
            entry = scopes.get(sender_domain)
            if entry is not None and entry.applies_at(now):
                return entry
        return None

    def entries_of(self, address: str, now: datetime) -> list[Entry]:
        """Every entry of ``address`` in force, every-sender first, then by scope."""
        scopes = self._entries.get(address, {})
        found = [entry for entry in scopes.values() if entry.applies_at(now)]
        return sorted(found, key=lambda e: (e.scope is not None, e.scope or ""))

    def active(self, now: datetime) -> list[Entry]:
        """Every entry in force, by address then scope."""
        found = [
            entry
            for scopes in self._entries.values()
            for entry in scopes.values()
            if entry.applies_at(now)
        ]
        return sorted(found, key=lambda e: (e.address, e.scope is not None, e.scope or ""))

    def counts(self, now: datetime) -> Counter[Source]:
        """Entries in force, by source."""
        return Counter(entry.source for entry in self.active(now))

    def strikes(self, address: str, *, since: datetime) -> int:
        """How many different messages to ``address`` expired after ``since``."""
        return sum(1 for at in self._strikes.get(address, {}).values() if at > since)

    def has_strike(self, address: str, key: str, *, since: datetime) -> bool:
        at = self._strikes.get(address, {}).get(key)
        return at is not None and at > since

    # --- housekeeping ----------------------------------------------------------

    def prune(self, now: datetime, *, strikes_before: datetime) -> None:
        """Forget expired entries and old strikes (lookups already ignore them)."""
        for address in list(self._entries):
            scopes = self._entries[address]
            for scope in [s for s, entry in scopes.items() if not entry.applies_at(now)]:
                del scopes[scope]
            if not scopes:
                del self._entries[address]
        for address in list(self._strikes):
            keys = self._strikes[address]
            for key in [k for k, at in keys.items() if at <= strikes_before]:
                del keys[key]
            if not keys:
                del self._strikes[address]

    def snapshot(
        self, snapshot_id: str, *, covers: datetime, now: datetime, part_size: int
    ) -> list[SnapshotPart]:
        """The list in force at ``now`` in parts of at most ``part_size`` entries
        (and as many strikes), so no record outgrows a broker message."""
        entries = self.active(now)
        strikes = [
            Struck(address, key, at)
            for address, keys in sorted(self._strikes.items())
            for key, at in sorted(keys.items())
        ]
        count = max(1, -(-max(len(entries), len(strikes)) // part_size))
        return [
            SnapshotPart(
                snapshot_id,
                index + 1,
                count,
                covers,
                tuple(entries[index * part_size : (index + 1) * part_size]),
                tuple(strikes[index * part_size : (index + 1) * part_size]),
            )
            for index in range(count)
        ]
