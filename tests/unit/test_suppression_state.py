"""The suppression list's entries, records and folding: pure, no broker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailyard.addresses import AddressError
from mailyard.suppression.entries import (
    Entry,
    Source,
    normalize_address,
    normalize_scope,
    rfc3339,
    sender_domain,
)
from mailyard.suppression.records import Added, Removed, SnapshotPart, Struck, decode, encode
from mailyard.suppression.replay import SnapshotFinder, lookback
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import suppression_pb2 as spb

NOW = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)


def entry(
    address: str = "bob@example.com",
    *,
    scope: str | None = None,
    source: Source = Source.BOUNCE,
    since: datetime = NOW,
    expires: datetime | None = None,
    reason: str = "550 5.1.1 no such user",
    bounce_class: str | None = "InvalidRecipient",
) -> Entry:
    return Entry(address, scope, reason, bounce_class, source, since, expires)


def folded(*records) -> SuppressionState:
    state = SuppressionState()
    for record in records:
        state.apply(record)
    return state


# --- addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Bob@Example.COM", "Bob@example.com"),  # the domain folds, the local part stays
        ("bob@example.com", "bob@example.com"),
        ("  bob@example.com ", "bob@example.com"),
        ('"a@b"@Example.com', '"a@b"@example.com'),  # the domain is after the last @
    ],
)
def test_addresses_fold_the_domain_only(given, expected):
    assert normalize_address(given) == expected


@pytest.mark.parametrize(
    "bad", ["bob", "@example.com", "bob@", "bob@exa mple.com", "bob\r\n@example.com", "<b>@x.y"]
)
def test_what_is_no_mailbox_is_refused(bad):
    with pytest.raises(AddressError):
        normalize_address(bad)


def test_scopes_and_sender_domains_are_lower_case():
    assert normalize_scope(" Sender.TEST ") == "sender.test"
    assert sender_domain("App@Sender.TEST") == "sender.test"
    assert sender_domain("") == ""
    with pytest.raises(AddressError):
        normalize_scope("app@sender.test")


def test_json_has_exactly_the_contract_fields():
    one = entry(expires=NOW + timedelta(days=365))
    assert one.as_json() == {
        "address": "bob@example.com",
        "scope": None,
        "reason": "550 5.1.1 no such user",
        "class": "InvalidRecipient",
        "source": "bounce",
        "since": "2025-06-01T10:00:00Z",
        "expires": "2026-06-01T10:00:00Z",
    }
    assert entry(expires=None, bounce_class=None).as_json()["expires"] is None
    assert rfc3339(datetime(2025, 6, 1, 12, 0, 0, 999, tzinfo=UTC)) == "2025-06-01T12:00:00Z"


# --- folding -------------------------------------------------------------------


def test_add_remove_and_add_again():
    added = Added(entry())
    state = folded(added)
    assert state.lookup("bob@example.com", "sender.test", NOW) == added.entry
    state.apply(Removed("bob@example.com", every_scope=True))
    assert state.lookup("bob@example.com", "sender.test", NOW) is None
    assert not state
    again = Added(entry(source=Source.MANUAL, reason="by hand", since=NOW + timedelta(hours=1)))
    state.apply(again)
    assert state.lookup("bob@example.com", "", NOW) == again.entry
    assert len(state) == 1


def test_a_later_add_replaces_the_earlier_one():
    state = folded(Added(entry(reason="first")), Added(entry(reason="second")))
    assert [e.reason for e in state.active(NOW)] == ["second"]


def test_the_local_part_is_case_sensitive_the_domain_is_not():
    state = folded(Added(entry(normalize_address("Bob@Example.COM"))))
    assert state.lookup("Bob@example.com", "", NOW) is not None
    assert state.lookup("bob@example.com", "", NOW) is None  # another mailbox, maybe


def test_an_entry_stops_applying_at_its_expiry_by_itself():
    expires = NOW + timedelta(seconds=30)
    state = folded(Added(entry(expires=expires)))
    assert state.lookup("bob@example.com", "", expires - timedelta(microseconds=1)) is not None
    assert state.lookup("bob@example.com", "", expires) is None
    assert state.active(expires) == []
    assert state.counts(NOW) == {Source.BOUNCE: 1}
    assert state.counts(expires) == {}


def test_a_scoped_entry_applies_only_to_mail_from_its_domain():
    state = folded(Added(entry(scope="news.test", source=Source.UNSUBSCRIBE)))
    assert state.lookup("bob@example.com", "news.test", NOW) is not None
    assert state.lookup("bob@example.com", "shop.test", NOW) is None
    assert state.lookup("bob@example.com", "", NOW) is None  # the null sender: every-sender only
    state.apply(Added(entry()))
    assert state.lookup("bob@example.com", "shop.test", NOW).scope is None


def test_removing_one_scope_keeps_the_others():
    state = folded(Added(entry(scope="news.test")), Added(entry(scope=None)))
    state.apply(Removed("bob@example.com", "news.test"))
    assert [(e.scope) for e in state.entries_of("bob@example.com", NOW)] == [None]
    state.apply(Removed("bob@example.com", None))
    assert state.entries_of("bob@example.com", NOW) == []
    assert not state


def test_strikes_are_a_set_and_an_add_or_remove_forgets_them():
    struck = [Struck("bob@example.com", key, NOW) for key in ("m1", "m2", "m1")]
    state = folded(*struck)
    assert state.strikes("bob@example.com", since=NOW - timedelta(days=1)) == 2
    assert state.strikes("bob@example.com", since=NOW) == 0  # only later ones count
    assert state.has_strike("bob@example.com", "m1", since=NOW - timedelta(seconds=1))
    state.apply(Removed("bob@example.com", every_scope=True))
    assert state.strikes("bob@example.com", since=NOW - timedelta(days=1)) == 0
    state.apply(struck[0])
    state.apply(Added(entry()))
    assert state.strikes("bob@example.com", since=NOW - timedelta(days=1)) == 0


def log_of_changes(count: int, seed: int) -> list:
    """Random adds, removes and strikes over a few addresses."""
    rng = random.Random(seed)
    addresses = [f"u{n}@example.com" for n in range(4)]
    records = []
    for n in range(count):
        address = rng.choice(addresses)
        kind = rng.choice(["add", "add_scoped", "remove", "remove_all", "strike"])
        if kind == "add":
            records.append(Added(entry(address, reason=f"r{n}")))
        elif kind == "add_scoped":
            records.append(Added(entry(address, scope="news.test", reason=f"r{n}")))
        elif kind == "remove":
            records.append(Removed(address, rng.choice([None, "news.test"])))
        elif kind == "remove_all":
            records.append(Removed(address, every_scope=True))
        else:
            records.append(Struck(address, f"m{rng.randrange(5)}", NOW))
    return records


def view(state: SuppressionState) -> tuple:
    addresses = [f"u{n}@example.com" for n in range(4)]
    return (
        state.active(NOW),
        [state.strikes(a, since=NOW - timedelta(days=1)) for a in addresses],
    )


@pytest.mark.parametrize("seed", range(20))
def test_folding_a_stretch_again_changes_nothing(seed):
    """What following "from a little before" relies on (state.py's theory)."""
    records = log_of_changes(40, seed)
    once = folded(*records)
    start = random.Random(seed).randrange(len(records))
    twice = folded(*records, *records[start:])
    assert view(twice) == view(once)


@pytest.mark.parametrize("seed", range(10))
def test_a_snapshot_and_the_records_after_it_give_the_same_list(seed):
    records = log_of_changes(60, seed)
    cut = random.Random(seed).randrange(1, len(records))
    before = folded(*records[:cut])
    parts = before.snapshot("s1", covers=NOW, now=NOW, part_size=2)
    restored = SuppressionState()
    restored.load(parts)
    assert view(restored) == view(before)
    # Loading, then folding from a little before the cut, is the whole log.
    back = max(0, cut - random.Random(seed + 1).randrange(5))
    for record in records[back:]:
        restored.apply(record)
    assert view(restored) == view(folded(*records))


def test_snapshot_parts_are_bounded_and_numbered():
    state = folded(*(Added(entry(f"u{n}@example.com")) for n in range(5)))
    parts = state.snapshot("abc", covers=NOW, now=NOW, part_size=2)
    assert [(p.part, p.parts, len(p.entries)) for p in parts] == [(1, 3, 2), (2, 3, 2), (3, 3, 1)]
    empty = SuppressionState().snapshot("e", covers=NOW, now=NOW, part_size=2)
    assert [(p.part, p.parts, p.entries) for p in empty] == [(1, 1, ())]


def test_a_snapshot_leaves_out_what_has_expired():
    state = folded(Added(entry(expires=NOW)), Added(entry("keep@example.com")))
    [part] = state.snapshot("s", covers=NOW, now=NOW, part_size=10)
    assert [e.address for e in part.entries] == ["keep@example.com"]


def test_prune_forgets_expired_entries_and_old_strikes():
    state = folded(
        Added(entry(expires=NOW)),
        Struck("old@example.com", "m1", NOW - timedelta(days=40)),
        Struck("new@example.com", "m2", NOW),
    )
    state.prune(NOW, strikes_before=NOW - timedelta(days=30))
    assert len(state) == 0
    assert state.strikes("old@example.com", since=datetime.min.replace(tzinfo=UTC)) == 0
    assert state.strikes("new@example.com", since=NOW - timedelta(days=1)) == 1


# --- records -------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        Added(entry(expires=NOW + timedelta(days=365))),
        Added(entry(scope="news.test", bounce_class=None, expires=None, source=Source.COMPLAINT)),
        Removed("bob@example.com", "news.test"),
        Removed("bob@example.com", every_scope=True),
        Struck("bob@example.com", "01JABC", NOW),
        SnapshotPart("s1", 1, 2, NOW, (entry(),), (Struck("x@example.com", "k", NOW),)),
    ],
)
def test_records_survive_the_wire(record):
    assert decode(encode(record)) == record


def wire(**change) -> bytes:
    return spb.SuppressionRecord(**change).SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no change at all
        b"\xff\xff\xff",  # not protobuf
        spb.SuppressionRecord(
            add=spb.SuppressionEntry(address="a@b.c", source=99)
        ).SerializeToString(),
        spb.SuppressionRecord(add=spb.SuppressionEntry(source=1)).SerializeToString(),
        spb.SuppressionRecord(strike=spb.SuppressionStrike(address="a@b.c")).SerializeToString(),
        spb.SuppressionRecord(
            snapshot=spb.SuppressionSnapshot(id="s", part=3, parts=2)
        ).SerializeToString(),
    ],
)
def test_records_this_version_cannot_read_are_none(data):
    assert decode(data) is None


# --- where a replica starts ----------------------------------------------------


def test_the_finder_keeps_the_snapshot_completed_last():
    def part(sid: str, n: int, of: int) -> SnapshotPart:
        return SnapshotPart(sid, n, of, NOW, (entry(f"{sid}{n}@example.com"),), ())

    finder = SnapshotFinder()
    seen = [
        finder.see(r)
        for r in [part("a", 1, 2), Added(entry()), part("b", 1, 1), part("a", 2, 2), None]
    ]
    assert seen == [False, False, True, True, False]
    assert [p.id for p in finder.latest] == ["a", "a"]
    finder.see(part("c", 2, 2))  # incomplete: "a" stays the latest
    assert [p.part for p in finder.latest] == [1, 2]


def test_lookback_is_two_intervals_and_some():
    assert lookback(timedelta(0)) is None
    assert lookback(timedelta(days=1)) == timedelta(days=2, hours=1)
