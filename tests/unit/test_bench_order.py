"""The benchmark's order of systems in a round: Postfix first, the others rotated."""

from __future__ import annotations

from bench.__main__ import in_turn
from bench.systems import PostfixSystem


def test_postfix_leads_every_round_and_the_others_take_turns_after_it():
    postfix = PostfixSystem.__new__(PostfixSystem)  # only its type matters here
    systems = [postfix, "split", "embedded", "split-before"]
    assert in_turn(systems, 1) == [postfix, "split", "embedded", "split-before"]
    assert in_turn(systems, 2) == [postfix, "embedded", "split-before", "split"]
    assert in_turn(systems, 3) == [postfix, "split-before", "split", "embedded"]
    assert in_turn(systems, 4) == in_turn(systems, 1)
    assert in_turn(["split"], 2) == ["split"]
