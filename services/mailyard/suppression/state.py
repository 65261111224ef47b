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
from collections.abc import Iterable, Iterator
from datetime import datetime

from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, Record, Removed, SnapshotPart, Struck


class SuppressionState:
    def __init__(self) -> None:
        # Nearly every entry is for every sender (hard bounces): those sit in
        # one flat dict, so the lookup is one dict get and an entry costs a
        # slot, not a dict of its own. Scoped entries (a sender domain's
        # unsubscribes, complaints) have their own, consulted only when any exist.
        self._every: dict[str, Entry] = {}
        self._scoped: dict[tuple[str, str], Entry] = {}
        self._scopes: dict[str, set[str]] = {}  # address → scopes it has entries for
        self._strikes: dict[str, dict[str, datetime]] = {}  # address → key → when

    def __bool__(self) -> bool:
        return bool(self._every) or bool(self._scoped)

    def __len__(self) -> int:
        return len(self._every) + len(self._scoped)

    # --- folding ---------------------------------------------------------------

    def apply(self, record: Record) -> None:
        if isinstance(record, Added):
            self._put(record.entry)
            self._strikes.pop(record.entry.address, None)
        elif isinstance(record, Removed):
            address = record.address
            if record.every_scope or record.scope is None:
                self._every.pop(address, None)
            if record.every_scope:
                for scope in self._scopes.pop(address, ()):
                    self._scoped.pop((address, scope), None)
            elif record.scope is not None:
                self._drop_scoped(address, record.scope)
            self._strikes.pop(address, None)
        elif isinstance(record, Struck):
            self._strikes.setdefault(record.address, {})[record.key] = record.at
        # A SnapshotPart changes nothing for a replica already following:
        # it restates what the replica has (see load()).

    def load(self, parts: Iterable[SnapshotPart]) -> None:
        """Replace everything with a snapshot's parts (all of one snapshot)."""
        self._every.clear()
        self._scoped.clear()
        self._scopes.clear()
        self._strikes.clear()
        for part in parts:
            for entry in part.entries:
                self._put(entry)
            for strike in part.strikes:
                self._strikes.setdefault(strike.address, {})[strike.key] = strike.at

    def _put(self, entry: Entry) -> None:
        if entry.scope is None:
            self._every[entry.address] = entry
        else:
            self._scoped[(entry.address, entry.scope)] = entry
            self._scopes.setdefault(entry.address, set()).add(entry.scope)

    def _drop_scoped(self, address: str, scope: str) -> None:
        self._scoped.pop((address, scope), None)
        scopes = self._scopes.get(address)
        if scopes is not None:
            scopes.discard(scope)
            if not scopes:
                del self._scopes[address]

    # --- the decision ----------------------------------------------------------

    def lookup(self, address: str, sender_domain: str, now: datetime) -> Entry | None:
        """The entry that keeps mail from ``sender_domain`` away from ``address``, if any.

        ``address`` is spelled as :func:`~mailyard.suppression.entries.normalize_address`
        spells it (as the queue's split does); ``sender_domain`` is the
        envelope sender's, lower case ("" for the null sender: only entries
        for every sender apply). The hot path: one dict lookup per recipient.
        """
        entry = self._every.get(address)
        if entry is not None and (entry.expires is None or now < entry.expires):
            return entry
        if sender_domain and self._scoped:
            entry = self._scoped.get((address, sender_domain))
            if entry is not None and (entry.expires is None or now < entry.expires):
                return entry
        return None

    def entries_of(self, address: str, now: datetime) -> list[Entry]:
        """Every entry of ``address`` in force, every-sender first, then by scope."""
        found = [self._every[address]] if address in self._every else []
        found += [self._scoped[(address, s)] for s in sorted(self._scopes.get(address, ()))]
        return [entry for entry in found if entry.applies_at(now)]

    def _all(self) -> Iterator[Entry]:
        yield from self._every.values()
        yield from self._scoped.values()

    def active(self, now: datetime) -> list[Entry]:
        """Every entry in force, by address then scope."""
        found = [entry for entry in self._all() if entry.applies_at(now)]
        return sorted(found, key=lambda e: (e.address, e.scope is not None, e.scope or ""))

    def counts(self, now: datetime) -> Counter[Source]:
        """Entries in force, by source."""
        return Counter(entry.source for entry in self._all() if entry.applies_at(now))

    def strikes(self, address: str, *, since: datetime) -> int:
        """How many different messages to ``address`` expired after ``since``."""
        return sum(1 for at in self._strikes.get(address, {}).values() if at > since)

    def has_strike(self, address: str, key: str, *, since: datetime) -> bool:
        at = self._strikes.get(address, {}).get(key)
        return at is not None and at > since

    # --- housekeeping ----------------------------------------------------------

    def prune(self, now: datetime, *, strikes_before: datetime) -> None:
        """Forget expired entries and old strikes (lookups already ignore them)."""
        for address in [a for a, entry in self._every.items() if not entry.applies_at(now)]:
            del self._every[address]
        for address, scope in [k for k, entry in self._scoped.items() if not entry.applies_at(now)]:
            self._drop_scoped(address, scope)
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
