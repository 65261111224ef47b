"""Reusing SMTP sessions across jobs, like Postfix's scache.

A session that finished a transaction cleanly waits here, keyed by the
address and port it is connected to, for the next job to the same host:
no TCP, greeting, EHLO or TLS handshake the second time. Sessions are
dropped after ``max_idle`` seconds unused or after the transactions its
destination allows a connection (``max_messages_per_connection``). The
idle-sessions gauge is set as the reaper passes, every ``max_idle / 2``. Idle
sessions count towards their destination's connections: the pool keeps one
only while ``keep_idle`` (the gate, delivery/gate.py) allows it, and closes
some when asked to (:meth:`trim`, :meth:`evict_one`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

from mailyard.delivery import metrics
from mailyard.delivery.smtp import SmtpSession, close_session


class SessionPool:
    def __init__(
        self,
        *,
        enabled: bool,
        max_idle: float,
        keep_idle: Callable[[str], bool] = lambda destination: True,
    ) -> None:
        self.enabled = enabled
        self.max_idle = max_idle
        self.keep_idle = keep_idle
        self._idle: defaultdict[tuple[str, int], list[SmtpSession]] = defaultdict(list)
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled:
            self._reaper = asyncio.create_task(self._reap_forever(), name="smtp-session-reaper")

    def take(
        self,
        address: str,
        port: int,
        suits: Callable[[SmtpSession], bool] = lambda _: True,
    ) -> SmtpSession | None:
        """The most recently used live session to ``address:port`` that ``suits`` accepts."""
        idle = self._idle.get((address, port))
        if not idle:
            return None
        now = time.monotonic()
        for index in range(len(idle) - 1, -1, -1):
            session = idle[index]
            if not session.alive or now - session.last_used >= self.max_idle:
                del idle[index]
                session.close()
            elif suits(session):
                del idle[index]
                metrics.SESSIONS_REUSED.inc()
                return session
        return None

    def keep(self, session: SmtpSession) -> bool:
        """Keep a session whose transaction ended cleanly for the next job to its host,
        if it may carry more and its destination lets it wait idle. False: the
        caller closes it (``close_session``: QUIT, a round trip).

        Not async, and the idle gauge is set by the reaper, not here: this runs
        once a job, and a coroutine and a gauge update showed in the profile.
        """
        if (
            self.enabled
            and session.alive
            and session.transactions < session.max_transactions
            and self.keep_idle(session.destination)
        ):
            session.last_used = time.monotonic()
            self._idle[(session.address, session.port)].append(session)
            return True
        return False

    def evict_one(self, destination: str) -> bool:
        """Close the least recently used idle session of ``destination``, if any."""
        oldest: SmtpSession | None = None
        for sessions in self._idle.values():
            for session in sessions:
                if session.destination == destination and (
                    oldest is None or session.last_used < oldest.last_used
                ):
                    oldest = session
        if oldest is None:
            return False
        self._idle[(oldest.address, oldest.port)].remove(oldest)
        oldest.close()  # no QUIT: the slot is wanted now
        metrics.IDLE_SESSIONS.set(self.idle_count)
        return True

    def trim(self, destination: str, keep: int, open_now: Callable[[], int]) -> None:
        """Close idle sessions of ``destination`` while more than ``keep`` are open."""
        while open_now() > keep and self.evict_one(destination):
            pass

    @property
    def idle_count(self) -> int:
        return sum(len(sessions) for sessions in self._idle.values())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self.max_idle / 2, 0.5))
            await self.reap()

    async def reap(self) -> None:
        now = time.monotonic()
        for key, sessions in list(self._idle.items()):
            keep = [s for s in sessions if s.alive and now - s.last_used < self.max_idle]
            stale = [s for s in sessions if s not in keep]
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
            for session in stale:
                await close_session(session)
        metrics.IDLE_SESSIONS.set(self.idle_count)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = [s for group in self._idle.values() for s in group]
        self._idle.clear()
        await asyncio.gather(*(close_session(s) for s in sessions), return_exceptions=True)
