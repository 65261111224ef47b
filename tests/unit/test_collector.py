"""The garbage collector as a running service leaves it (runtime.settle_collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mailyard.runtime import YOUNG_COLLECTION, settle_collector


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_leave_the_collections_and_the_young_generation_grows(collector):
    before = gc.get_threshold()
    settle_collector()
    assert gc.get_freeze_count() > 1000  # at least the modules' objects
    assert gc.get_threshold() == (YOUNG_COLLECTION, before[1], before[2])


def test_garbage_cycles_are_still_collected(collector):
    settle_collector()

    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first  # type: ignore[attr-defined]
    del first, second
    assert gc.collect() >= 2
