"""At most N concurrent deliveries per destination domain.

Remote servers throttle (or blocklist) senders that open too many sessions
at once; Postfix's ``default_destination_concurrency_limit`` is 20.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class DestinationLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(destination, asyncio.Semaphore(self.limit))
        self._users[destination] = self._users.get(destination, 0) + 1
        try:
            async with semaphore:
                yield
        finally:
            # Forget destinations nobody is using, so the table stays small.
            self._users[destination] -= 1
            if not self._users[destination]:
                del self._users[destination]
                del self._slots[destination]
