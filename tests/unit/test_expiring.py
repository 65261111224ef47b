"""The bounded cache of entries that expire each at its own time (routes, MTA-STS policies)."""

from __future__ import annotations

from mailyard.delivery.expiring import ExpiringCache


def test_an_entry_holds_until_its_time_and_the_least_recently_used_goes_first():
    cache: ExpiringCache[str, str] = ExpiringCache(size=2)
    cache.put("a.example", "policy", until=110)
    assert cache.get("a.example", now=109.9) == "policy"
    assert cache.get("a.example", now=110) is None
    cache.put("a.example", "policy", until=300)
    cache.put("b.example", "policy", until=300)
    cache.get("a.example", now=201)  # used: b is now the oldest
    cache.put("c.example", "policy", until=300)
    assert cache.get("b.example", now=203) is None
    assert cache.get("a.example", now=203) == "policy"


def test_size_zero_keeps_nothing():
    cache: ExpiringCache[str, int] = ExpiringCache(size=0)
    cache.put("a.example", 1, until=100)
    assert cache.get("a.example", now=0) is None
