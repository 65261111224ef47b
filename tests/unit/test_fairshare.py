"""Job slots by weight between message classes: the decision alone, no asyncio, no sockets."""

from __future__ import annotations

from collections import Counter
from itertools import count

import pytest

from mailyard.delivery.fairshare import FairShare

TEN_TO_ONE = {"transactional": 10, "bulk": 1}


class Jobs:
    """Waiters named after their class: ("bulk", 3) is the third bulk job."""

    def __init__(self, share: FairShare[tuple[str, int]]) -> None:
        self.share = share
        self.numbers = count()

    def ask(self, mail_class: str, n: int = 1) -> list[bool]:
        return [self.share.request(mail_class, (mail_class, next(self.numbers))) for _ in range(n)]

    def served(self, releases: int) -> list[str]:
        """The class each of ``releases`` freed slots goes to ("-" when it stays free)."""
        classes = []
        for _ in range(releases):
            waiter = self.share.release()
            classes.append(waiter[0] if waiter is not None else "-")
        return classes


def busy(weights: dict[str, int] = TEN_TO_ONE, slots: int = 1) -> Jobs:
    """Every slot taken (by a transactional job), so that whoever comes next waits."""
    jobs = Jobs(FairShare(slots, weights))
    assert jobs.ask("transactional", slots) == [True] * slots
    return jobs


def test_a_free_slot_is_had_at_once_and_no_more_than_there_are():
    jobs = Jobs(FairShare(3, TEN_TO_ONE))
    assert jobs.ask("bulk", 2) == [True, True]
    assert jobs.ask("transactional", 2) == [True, False]
    assert jobs.share.free == 0
    assert jobs.share.waiting("transactional") == 1


def test_slots_go_ten_to_one_while_both_classes_wait():
    jobs = busy()
    jobs.ask("bulk", 100)
    jobs.ask("transactional", 1000)
    served = jobs.served(110)
    assert Counter(served) == {"transactional": 100, "bulk": 10}
    # Spread out, not in runs: one bulk job in every eleven (the running job
    # was the first transactional one of the first eleven).
    assert served.index("bulk") == 9
    assert all(served[i : i + 11].count("bulk") == 1 for i in range(0, 110, 11))


def test_a_class_with_nothing_waiting_leaves_its_share_to_the_others():
    jobs = busy()
    jobs.ask("bulk", 50)
    assert jobs.served(50) == ["bulk"] * 50
    assert jobs.served(1) == ["-"]  # and nobody left: the slot stays free
    assert jobs.share.free == 1


def test_bulk_is_never_starved_however_much_transactional_waits():
    jobs = busy()
    jobs.ask("bulk", 3)
    jobs.ask("transactional", 10_000)
    served = jobs.served(33)
    assert served.count("bulk") == 3


def test_transactional_is_first_the_moment_it_waits_after_a_bulk_flood():
    """Bulk served alone for a long time gains transactional nothing it must wait out."""
    jobs = busy()
    jobs.ask("bulk", 5000)
    assert jobs.served(1000) == ["bulk"] * 1000
    jobs.ask("transactional", 1000)
    assert jobs.served(10) == ["transactional"] * 10
    assert jobs.served(110).count("bulk") == 10


def test_time_spent_idle_earns_no_credit():
    """Bulk that comes back after transactional ran alone gets its share, not a burst."""
    jobs = busy(slots=1)
    for _ in range(1000):  # transactional alone, one after the other
        jobs.ask("transactional", 1)
        assert jobs.served(1) == ["transactional"]
    jobs.ask("bulk", 100)
    jobs.ask("transactional", 100)
    assert jobs.served(22).count("bulk") == 2


def test_more_classes_share_by_their_weights():
    jobs = busy({"transactional": 6, "bulk": 3, "news": 1})
    for name in ("transactional", "bulk", "news"):
        jobs.ask(name, 1000)
    assert Counter(jobs.served(100)) == {"transactional": 60, "bulk": 30, "news": 10}


def test_equal_weights_take_turns():
    jobs = busy({"transactional": 1, "bulk": 1})
    jobs.ask("bulk", 5)
    jobs.ask("transactional", 5)
    assert jobs.served(4) == ["bulk", "transactional", "bulk", "transactional"]


def test_a_withdrawn_waiter_is_never_handed_a_slot():
    share: FairShare[str] = FairShare(1, TEN_TO_ONE)
    assert share.request("transactional", "running")
    assert not share.request("bulk", "b1")
    assert not share.request("bulk", "b2")
    assert share.withdraw("b1")
    assert not share.withdraw("b1")  # once
    assert share.waiting("bulk") == 1
    assert share.release() == "b2"
    assert not share.withdraw("b2")  # it has its slot: too late to withdraw
    assert share.release() is None


def test_a_class_whose_waiters_all_withdrew_waits_no_more():
    share: FairShare[str] = FairShare(1, TEN_TO_ONE)
    share.request("transactional", "running")
    share.request("transactional", "t1")
    share.request("bulk", "b1")
    share.withdraw("t1")
    assert share.waiting("transactional") == 0
    assert share.release() == "b1"


def test_a_class_without_weight_counts_as_transactional():
    share: FairShare[str] = FairShare(1, TEN_TO_ONE)
    share.request("bulk", "running")
    share.request("gone", "old")
    assert share.waiting("transactional") == 1
    assert share.class_of("gone") == "transactional"
    assert share.release() == "old"


def test_a_waiter_asks_once():
    share: FairShare[str] = FairShare(1, TEN_TO_ONE)
    share.request("bulk", "running")
    share.request("bulk", "w")
    with pytest.raises(ValueError, match="waits already"):
        share.request("bulk", "w")


@pytest.mark.parametrize(
    ("slots", "weights", "message"),
    [
        (0, TEN_TO_ONE, "at least one slot"),
        (1, {"bulk": 1}, "transactional"),
        (1, {"transactional": 0}, "at least 1"),
    ],
)
def test_nonsense_is_refused(slots, weights, message):
    with pytest.raises(ValueError, match=message):
        FairShare(slots, weights)
