"""Jitter for the retry ladder: a delay, up to ``spread`` of it shorter, at random.

Only shorter: on RabbitMQ a rung's queue TTL is the longest a message can
wait there, and a per-message TTL can only cut it short. A message whose
TTL ends behind one that waits longer leaves with it (RabbitMQ expires
from the head of a queue), which still spreads a wave over the spread.
"""

from __future__ import annotations

import random


def jittered(delay: float, spread: float) -> float:
    if spread <= 0:
        return delay
    return delay * (1.0 - random.random() * min(spread, 1.0))  # noqa: S311 (timing, not secrets)
