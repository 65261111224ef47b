"""The DSN window: notices of one message that come close together become one DSN.

A message split into jobs for three domains that all fail at once makes
three failed events, handled by the bounce service as three broker
messages; the sender should get one DSN with three blocks, not three.
So each event waits, *unacknowledged*, for up to ``bounce.dsn_window``
after the first event of its message and action arrived; then one DSN is
made of all of them, stored, and only then is every one of them released.

Theory of operation:

- **Nothing is lost.** Until the DSN is durable, every event of it is
  still on the broker, unacknowledged. A crash hands them all back (to
  this process after a restart, or to the next consumer), and they are
  grouped again. A DSN stored just before a crash, whose events were not
  released yet, is made again: the duplicate window every consumer has
  (DESIGN.md guarantee 2).
- **One process sees a message's events.** The bounce queue has a single
  active consumer on RabbitMQ (the other replicas wait to take over) and
  one process owns the embedded spool, so the events of a message meet
  here. Only a takeover in the middle of a window (or a bounce queue
  declared before single active consumers, with several replicas) splits
  a notice in two: two DSNs, never none.
- **The window never starves the consumer.** Waiting events hold the
  consumer's prefetch; when the waiting ones fill it (``max_events``) or
  weigh ``max_bytes`` (RET=FULL events carry whole messages), the oldest
  group goes at once. Under a burst, notices then go out sooner, in more
  pieces, never later.
- **One bad event does not sink its company**: the flush reports an error
  per event, and the service plans the events of a group that will not
  plan one by one.

``flush`` is the service's: plan and store one DSN for a group's events,
saying for each event whether it is done (None) or what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailyard.bounce.notice import GroupKey
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

Flush = Callable[[list[pb.DeliveryEvent]], Awaitable[list[BaseException | None]]]

HELD_BYTES = 64 * 1024 * 1024


@dataclass(eq=False)
class _Group:
    key: GroupKey
    events: list[pb.DeliveryEvent] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Window:
    def __init__(
        self, seconds: float, flush: Flush, *, max_events: int, max_bytes: int = HELD_BYTES
    ) -> None:
        self.seconds = seconds
        self.flush = flush
        self.max_events = max(1, max_events)
        self.max_bytes = max_bytes
        self._open: dict[GroupKey, _Group] = {}  # oldest first
        self._events = 0  # in open groups
        self._bytes = 0
        self._closing = False
        self._flushing: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Events waiting for their window to close."""
        return self._events

    async def add(self, key: GroupKey, event: pb.DeliveryEvent) -> None:
        """Returns once a DSN covering ``event`` is stored; raises what kept it from that."""
        loop = asyncio.get_running_loop()
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(key)
            if self.seconds > 0 and not self._closing:
                group.timer = loop.call_later(self.seconds, self._close, group)
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(_retrieved)  # also when its handler is gone
        size = event.ByteSize()
        group.events.append(event)
        group.waiters.append(waiter)
        group.size += size
        self._events += 1
        self._bytes += size
        if group.timer is None:
            self._close(group)  # no window (or shutting down): at once
        while self._open and (self._events >= self.max_events or self._bytes >= self.max_bytes):
            self._close(next(iter(self._open.values())))
        # Shielded: a handler cancelled at shutdown leaves the others' DSN alone
        # (its own event is then not released, and comes back).
        await asyncio.shield(waiter)

    def close_all(self) -> None:
        """Shutting down: every open group goes now, and later ones at once."""
        self._closing = True
        for group in list(self._open.values()):
            self._close(group)

    def _close(self, group: _Group) -> None:
        if self._open.get(group.key) is not group:
            return  # closed already (the timer of a group that went early)
        del self._open[group.key]
        if group.timer is not None:
            group.timer.cancel()
        self._events -= len(group.events)
        self._bytes -= group.size
        task = asyncio.get_running_loop().create_task(self._flush(group))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, group: _Group) -> None:
        try:
            errors = await self.flush(list(group.events))
        except asyncio.CancelledError:
            for waiter in group.waiters:
                waiter.cancel()
            raise
        except Exception as exc:
            log.exception("making a DSN failed", extra={"message_id": group.key[0]})
            errors = [exc] * len(group.events)
        if len(errors) != len(group.waiters):
            errors = [RuntimeError("flush reported on the wrong number of events")] * len(
                group.waiters
            )
        for waiter, error in zip(group.waiters, errors, strict=True):
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
