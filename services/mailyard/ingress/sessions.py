"""Open sessions: a cap on how many, and what shutdown says to them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from mailyard.ingress import metrics
from mailyard.ingress.replies import SHUTTING_DOWN, TOO_MANY_SESSIONS


class SessionCounter:
    """Open sessions, so we can cap them and, on shutdown, wait for them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sessions: set[Any] = set()
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def open(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    def opened(self, session: Any) -> None:
        self._sessions.add(session)
        self.drained.clear()
        metrics.CONNECTIONS.inc()
        metrics.ACTIVE_SESSIONS.set(self.open)

    def closed(self, session: Any) -> None:
        self._sessions.discard(session)
        metrics.ACTIVE_SESSIONS.set(self.open)
        if not self._sessions:
            self.drained.set()

    def close_idle(self) -> None:
        """On shutdown: say goodbye to clients with no transaction under way."""
        for session in list(self._sessions):
            envelope, transport = session.envelope, session.transport
            if transport is not None and (envelope is None or not envelope.mail_from):
                cast(asyncio.WriteTransport, transport).write(SHUTTING_DOWN)
                transport.close()

    def close_all(self) -> None:
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()


class RefuseSession(asyncio.Protocol):
    """For a client over the session cap: one 421 line, then hang up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.WriteTransport subclasses.)
        cast(asyncio.WriteTransport, transport).write(TOO_MANY_SESSIONS)
        transport.close()
        metrics.REJECTED.labels("connect", "too_many_sessions").inc()
