"""Waits of one length, timed by one timer: they end in the order they began.

A timer per wait (``call_at`` and its cancel, some 2 us under uvloop) for
every job showed in the delivery profile: each job waits for its
destination's gate, and each batch has its deadline. Those waits are all
as long as one another (``shaping.max_wait``, ``attempt_timeout``), so the
first one begun is the first to end: waits are kept in that order, and one
timer, set for the first one still on, ends those that ran out and sets
itself for the next.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Expiries(Generic[T]):
    """``add(item)``: ``expire(item)`` is called ``seconds`` later, unless
    ``over(item)`` says by then that its wait ended some other way."""

    def __init__(
        self, seconds: float, expire: Callable[[T], None], over: Callable[[T], bool]
    ) -> None:
        self.seconds = seconds
        self._expire = expire
        self._over = over
        self._waits: deque[tuple[float, T]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        waits = self._waits
        while waits and self._over(waits[0][1]):
            waits.popleft()  # ended before it ran out: nothing is left to time
        waits.append((loop.time() + self.seconds, item))
        if self._timer is None:
            self._timer = loop.call_at(waits[0][0], self._fired)

    def __len__(self) -> int:
        """Waits kept (some may have ended already, and go at the next look)."""
        return len(self._waits)

    def _fired(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now, waits = loop.time(), self._waits
        while waits:
            ends, item = waits[0]
            if self._over(item):
                waits.popleft()
            elif ends <= now:
                waits.popleft()
                self._expire(item)
            else:
                self._timer = loop.call_at(ends, self._fired)
                return

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waits.clear()
