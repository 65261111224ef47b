"""MX selection: null MX, preference order, shuffling among equals."""

from __future__ import annotations

import random

import pytest

from mailyard.delivery.mx import MxRecord, exchangers_in_order, is_null_mx


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([MxRecord(0, "")], True),
        ([MxRecord(10, "")], True),
        ([], False),
        ([MxRecord(0, "mx.example.com")], False),
        ([MxRecord(0, ""), MxRecord(10, "mx.example.com")], False),
        ([MxRecord(0, ""), MxRecord(0, "")], False),
    ],
)
def test_is_null_mx(records, expected):
    assert is_null_mx(records) is expected


def test_is_null_mx_accepts_any_iterable():
    assert is_null_mx(iter([MxRecord(0, "")])) is True


def test_preference_order():
    records = [MxRecord(30, "c.example"), MxRecord(10, "a.example"), MxRecord(20, "b.example")]
    assert exchangers_in_order(records, random.Random(0)) == ["a.example", "b.example", "c.example"]


def test_no_records_means_no_hosts():
    assert exchangers_in_order([], random.Random(0)) == []


def test_equal_preferences_are_shuffled_and_both_orders_occur():
    records = [MxRecord(10, "a.example"), MxRecord(10, "b.example"), MxRecord(20, "c.example")]
    orders = set()
    for seed in range(20):
        hosts = exchangers_in_order(records, random.Random(seed))
        assert sorted(hosts[:2]) == ["a.example", "b.example"]
        assert hosts[2] == "c.example"
        assert len(hosts) == len(set(hosts))
        orders.add(tuple(hosts))
    assert orders == {
        ("a.example", "b.example", "c.example"),
        ("b.example", "a.example", "c.example"),
    }


def test_same_seed_same_order():
    records = [MxRecord(10, f"mx{i}.example") for i in range(8)]
    first = exchangers_in_order(records, random.Random(42))
    assert exchangers_in_order(records, random.Random(42)) == first
    assert sorted(first) == sorted(r.exchange for r in records)


def test_each_host_once_at_its_best_preference():
    records = [
        MxRecord(20, "backup.example"),
        MxRecord(10, "primary.example"),
        MxRecord(10, "primary.example"),
        MxRecord(30, "primary.example"),
    ]
    for seed in range(5):
        assert exchangers_in_order(records, random.Random(seed)) == [
            "primary.example",
            "backup.example",
        ]


def test_root_exchange_is_skipped_when_mixed_with_real_ones():
    records = [MxRecord(0, ""), MxRecord(10, "mx.example"), MxRecord(10, "")]
    assert exchangers_in_order(records, random.Random(0)) == ["mx.example"]


def test_lone_root_exchange_gives_no_hosts():
    assert exchangers_in_order([MxRecord(0, "")], random.Random(0)) == []
