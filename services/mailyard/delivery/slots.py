"""``delivery.concurrency`` job slots, shared between message classes by weight.

The asyncio side of :mod:`mailyard.delivery.fairshare`, which decides who
gets the next free slot: :meth:`JobSlots.acquire` waits for a slot for a job
of a class, :meth:`JobSlots.release` gives it back (and hands it on). A
waiter cancelled (a batch's deadline, a shutdown) leaves the line; one
cancelled just as it was handed a slot passes the slot on, so no slot is
ever lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from mailyard.delivery import metrics
from mailyard.delivery.fairshare import FairShare


class JobSlots:
    def __init__(self, slots: int, weights: Mapping[str, int]) -> None:
        self._share: FairShare[asyncio.Future[None]] = FairShare(slots, weights)
        self._waiting = {name: metrics.SLOT_WAITING.labels(name) for name in weights}
        self._waited = {name: metrics.SLOT_WAIT_SECONDS.labels(name) for name in weights}
        for gauge in self._waiting.values():
            gauge.set(0)

    @property
    def free(self) -> int:
        return self._share.free

    def class_of(self, mail_class: str) -> str:
        """The class a job is counted in (transactional for one without a weight)."""
        return self._share.class_of(mail_class)

    async def acquire(self, mail_class: str) -> None:
        """Wait for a slot for a job of ``mail_class``; release it when the job is done."""
        name = self._share.class_of(mail_class)
        waiter = asyncio.get_running_loop().create_future()
        if self._share.request(name, waiter):
            self._waited[name].observe(0)
            return
        started = time.monotonic()
        self._waiting[name].inc()
        try:
            await waiter
        except asyncio.CancelledError:
            if not self._share.withdraw(waiter) and waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            raise
        finally:
            self._waiting[name].dec()
        self._waited[name].observe(time.monotonic() - started)

    def release(self) -> None:
        while (waiter := self._share.release()) is not None:
            if not waiter.done():  # not cancelled while it was waiting its turn
                waiter.set_result(None)
                return
