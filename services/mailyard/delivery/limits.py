"""At most N concurrent deliveries per destination domain.

Remote servers throttle (or blocklist) senders that open too many sessions
at once; Postfix's ``default_destination_concurrency_limit`` is 20. Jobs
waiting for a destination are let in by ``priority`` (0 first: transactional
mail), then in the order they came.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Destination:
    free: int
    users: int = 0
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)  # heap


class DestinationLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._destinations: dict[str, _Destination] = {}
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, destination: str, *, priority: int = 0) -> AsyncIterator[None]:
        state = self._destinations.get(destination)
        if state is None:
            state = self._destinations[destination] = _Destination(self.limit)
        state.users += 1
        try:
            await self._acquire(state, priority)
            try:
                yield
            finally:
                self._release(state)
        finally:
            # Forget destinations nobody is using, so the table stays small.
            state.users -= 1
            if not state.users:
                del self._destinations[destination]

    async def _acquire(self, state: _Destination, priority: int) -> None:
        if state.free and not state.waiters:
            state.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(state.waiters, (priority, next(self._order), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(state)  # handed the slot as it was cancelled: pass it on
            raise

    def _release(self, state: _Destination) -> None:
        while state.waiters:
            _, _, waiter = heapq.heappop(state.waiters)
            if not waiter.done():  # cancelled ones are skipped
                waiter.set_result(None)
                return
        state.free += 1
