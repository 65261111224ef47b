"""The way in to a destination: its connections, its rate, its backoff, in one process.

A job asks :meth:`Gate.enter` before its attempt and gets either a
:class:`Permit` (go now) or a :class:`Held` (go back to the retry ladder,
not counted as an attempt). A destination's share of the cluster's limits
(delivery/shaping.py) decides how many jobs attempt at once here
(``max_connections``) and how many start per second
(``max_messages_per_second``, a token bucket). Jobs that cannot go at once
wait in memory, transactional ones first, but only as many as the
destination is expected to take within ``max_wait`` (its share of
connections times ``max_wait`` over its recent transaction time, and at
most its rate times ``max_wait``): a slow or throttled destination never
fills the process with its jobs, so the others flow at full speed. Paused
destinations (delivery/backoff.py) and destinations whose share here is 0
hold nothing in memory at all.

Sessions kept open for reuse count towards ``max_connections`` too: the
pool asks :meth:`Gate.may_keep_idle` before keeping one, and a job opening
a new session makes room first (:meth:`Gate.must_make_room`), so this
process never has more sessions open to a destination than its share.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import Counter

from mailyard.broker import Membership
from mailyard.delivery import metrics
from mailyard.delivery.backoff import Action, Backoff, BackoffPolicy, ThrottlingRules
from mailyard.delivery.expiry import Expiries
from mailyard.delivery.shaping import (
    Destination,
    Limits,
    ShapingTable,
    Share,
    backed_off,
    share,
)
from mailyard.reply import Reply
from mailyard.v1 import members_pb2 as mpb

# A first guess of a transaction's time, before any was measured: short, so
# that a new destination's waiting room starts large.
FIRST_TRANSACTION_TIME = 0.05
# How much one transaction's time moves the average.
SMOOTHING = 0.2
NO_LIMIT = Share(None, None)
# A destination nobody used for this long (seconds) is forgotten.
FORGET_AFTER = 120.0


class HeldReason(StrEnum):
    BUSY = "busy"  # no connection or token within max_wait, or the waiting room full
    PAUSED = "paused"
    NO_SHARE = "no_share"  # this process's share of a small limit is 0


@dataclass(frozen=True, slots=True)
class Held:
    reason: HeldReason
    pause_left: float = 0.0  # seconds, for PAUSED


@dataclass(eq=False)
class _State:
    destination: Destination
    backoff: Backoff
    label: str
    # mailyard_delivery_shaping_messages_total{destination=label}, bound once:
    # a labels() lookup per job showed in the profile.
    messages: Counter
    active: int = 0  # jobs holding a permit
    sessions: int = 0  # sessions open (in use or idle)
    waiting: int = 0
    waiters: list[tuple[int, int, asyncio.Future[Permit | Held]]] = field(default_factory=list)
    tokens: float = 0.0
    refilled: float = 0.0
    transaction_time: float = FIRST_TRANSACTION_TIME
    timer: asyncio.TimerHandle | None = None
    # The waits for a permit, each max_wait long (made by Gate._state).
    expiries: Expiries[asyncio.Future[Permit | Held]] | None = None
    was_paused: bool = False
    idle_since: float = 0.0
    share: Share = NO_LIMIT
    share_basis: tuple[float, int, int] = (-1.0, 0, 0)  # (factor, members, rank) of ``share``

    @property
    def limits(self) -> Limits:
        return self.destination.limits


@dataclass(eq=False)
class Permit:
    """The right to attempt one job now; give it back with :meth:`Gate.leave`."""

    state: _State
    started: float

    @property
    def key(self) -> str:
        return self.state.destination.key

    @property
    def max_transactions(self) -> int:
        return self.state.limits.max_messages_per_connection


class Gate:
    def __init__(
        self,
        table: ShapingTable,
        rules: ThrottlingRules,
        policy: BackoffPolicy,
        membership: Membership,
        *,
        max_wait: float,
        named: frozenset[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.rules = rules
        self.policy = policy
        self.membership = membership
        self.max_wait = max_wait
        self.named = named | frozenset(table.destinations)
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._swept = clock()
        self._order = itertools.count()
        # Set by the service: close idle sessions of a destination down to a number.
        self.trim: Callable[[str, int], None] = lambda key, keep: None
        membership.on_change(self._members_changed)
        self._export_configured()

    def _export_configured(self) -> None:
        """Every named destination's series from the start, at their resting values,
        so that dashboards and alerts see them before the first job."""
        for key in self.named:
            metrics.SHAPING_PAUSED.labels(key).set(0)
            metrics.SHAPING_THROTTLED.labels(key)
            metrics.SHAPING_MESSAGES.labels(key)
            for reason in HeldReason:
                metrics.SHAPING_HELD.labels(key, reason.value)
        for key, limits in self.table.destinations.items():
            if limits.max_connections is not None:
                metrics.SHAPING_LIMIT.labels(key, "connections").set(limits.max_connections)
            if limits.max_messages_per_second is not None:
                metrics.SHAPING_LIMIT.labels(key, "messages_per_second").set(
                    limits.max_messages_per_second
                )

    # --- entering and leaving ------------------------------------------------

    def destination(self, domain: str, mx_hosts: Iterable[str] = ()) -> Destination:
        return self.table.destination(domain, tuple(mx_hosts))

    async def enter(self, destination: Destination, *, priority: int = 0) -> Permit | Held:
        """A permit now, after a short wait, or the reason the job must go back."""
        now = self.clock()
        if now - self._swept >= FORGET_AFTER / 2:
            self._sweep(now)
        state = self._state(destination)
        if state.backoff.paused(now):
            return Held(HeldReason.PAUSED, state.backoff.paused_until - now)
        current = self._share(state, now)
        if current.connections == 0 or current.messages_per_second == 0:
            return Held(HeldReason.NO_SHARE)
        if not state.waiting and self._may_go(state, current, now):
            return self._take(state, now)
        if state.waiting >= self._room(state, current):
            return Held(HeldReason.BUSY)
        return await self._wait(state, priority)

    async def _wait(self, state: _State, priority: int) -> Permit | Held:
        """Until a permit, a pause (Held), or max_wait (Held: busy)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Permit | Held] = loop.create_future()
        heapq.heappush(state.waiters, (priority, next(self._order), future))
        state.waiting += 1
        self._pump(state)
        if not future.done():
            # Not asyncio.wait(timeout=), which builds a waiter future and
            # callbacks per call, nor a timer per waiter: at full speed most
            # jobs wait here a moment, and the profile showed both.
            if state.expiries is None:
                state.expiries = Expiries(
                    self.max_wait, lambda waiter: self._time_out(state, waiter), _done
                )
            state.expiries.add(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.cancelled():  # our task was cancelled while it waited
                    self._stopped_waiting(state)
                elif isinstance(granted := future.result(), Permit):
                    self.leave(granted, ())  # granted as we were cancelled: give it back
                raise
        return future.result()

    def _time_out(self, state: _State, future: asyncio.Future[Permit | Held]) -> None:
        future.set_result(Held(HeldReason.BUSY))
        self._stopped_waiting(state)

    def _stopped_waiting(self, state: _State) -> None:
        """A waiter gave up without a permit (its entry in ``waiters`` is done,
        and ``_pump`` drops it)."""
        state.waiting -= 1
        self._forget_if_idle(state)

    def leave(self, permit: Permit, replies: Iterable[Reply], *, sent: bool = False) -> None:
        """The attempt is over; ``replies`` are what the destination said, ``sent``
        whether a transaction took place (its time then counts in the average)."""
        state = permit.state
        now = self.clock()
        state.active -= 1
        if sent:
            elapsed = now - permit.started
            state.transaction_time += SMOOTHING * (elapsed - state.transaction_time)
        strongest = Action.NONE
        delivered = False
        for reply in set(replies):
            delivered = delivered or reply.is_positive
            action = self.rules.action(reply)
            if action is Action.PAUSE or (action is Action.THROTTLE and strongest is Action.NONE):
                strongest = action
        if strongest is not Action.NONE:
            metrics.SHAPING_THROTTLED.labels(state.label).inc()
            state.backoff.throttled(now, strongest)
            self._trim(state, now)
        elif delivered:
            state.backoff.delivered(now)
        self._pump(state)
        self._forget_if_idle(state)

    # --- sessions --------------------------------------------------------------

    def session_opened(self, key: str) -> None:
        state = self._states.get(key)
        if state is not None:
            state.sessions += 1
            metrics.SHAPING_SESSIONS.labels(state.label).inc()

    def session_closed(self, key: str) -> None:
        state = self._states.get(key)
        if state is not None:
            state.sessions -= 1
            metrics.SHAPING_SESSIONS.labels(state.label).dec()
            self._forget_if_idle(state)

    def sessions_of(self, key: str) -> int:
        state = self._states.get(key)
        return state.sessions if state is not None else 0

    def must_make_room(self, key: str) -> bool:
        """Whether a new session to ``key`` needs an idle one closed first."""
        state = self._states.get(key)
        if state is None:
            return False
        connections = self._share(state, self.clock()).connections
        return connections is not None and state.sessions >= connections

    def may_keep_idle(self, key: str) -> bool:
        state = self._states.get(key)
        if state is None:
            return True
        connections = self._share(state, self.clock()).connections
        return connections is None or state.sessions <= connections

    def label(self, key: str) -> str:
        """The metrics label of a destination: its key when named, else ``other``."""
        return key if key in self.named else "other"

    # --- the decisions -------------------------------------------------------

    def _state(self, destination: Destination) -> _State:
        state = self._states.get(destination.key)
        if state is None:  # (a key's limits are fixed: the same key, the same destination)
            label = self.label(destination.key)
            state = self._states[destination.key] = _State(
                destination,
                Backoff(self.policy),
                label,
                metrics.SHAPING_MESSAGES.labels(label),
                refilled=self.clock(),
            )
            state.tokens = self._bucket(self._share(state, state.refilled))
        return state

    def _share(self, state: _State, now: float) -> Share:
        """This process's share now; worked out again only when what it depends on changed."""
        membership = self.membership
        basis = (state.backoff.factor(now), membership.count, membership.rank)
        if basis != state.share_basis:
            state.share_basis = basis
            state.share = share(state.limits, factor=basis[0], members=basis[1], rank=basis[2])
            if state.label != "other":
                self._export(state, state.share, now)
        if state.label != "other" and state.backoff.paused(now) != state.was_paused:
            state.was_paused = not state.was_paused
            metrics.SHAPING_PAUSED.labels(state.label).set(1 if state.was_paused else 0)
        return state.share

    @staticmethod
    def _bucket(current: Share) -> float:
        """A token bucket's size: a tenth of a second's worth, at least one."""
        rate = current.messages_per_second
        return 1.0 if rate is None else max(1.0, rate / 10)

    def _may_go(self, state: _State, current: Share, now: float) -> bool:
        if current.connections is not None and state.active >= current.connections:
            return False
        rate = current.messages_per_second
        if rate is None:
            return True
        state.tokens = min(self._bucket(current), state.tokens + (now - state.refilled) * rate)
        state.refilled = now
        return state.tokens >= 1.0

    def _take(self, state: _State, now: float) -> Permit:
        state.active += 1
        if state.limits.max_messages_per_second is not None:
            state.tokens -= 1.0
        state.messages.inc()
        return Permit(state, now)

    def _room(self, state: _State, current: Share) -> int:
        """Jobs that may wait here: what the destination takes within max_wait."""
        room = math.inf
        if current.connections is not None:
            room = current.connections * self.max_wait / max(state.transaction_time, 1e-3)
        if current.messages_per_second is not None:
            room = min(room, current.messages_per_second * self.max_wait)
        return max(1, math.ceil(room)) if room != math.inf else 1_000_000

    def _pump(self, state: _State) -> None:
        """Let waiters in, best priority first, while the share allows."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if not state.waiting:
            return
        now = self.clock()
        if state.backoff.paused(now):
            self._release_waiters(state)
            return
        current = self._share(state, now)
        while state.waiters:
            _, _, future = state.waiters[0]
            if future.done():
                heapq.heappop(state.waiters)
                continue
            if not self._may_go(state, current, now):
                break
            heapq.heappop(state.waiters)
            state.waiting -= 1
            future.set_result(self._take(state, now))
        rate = current.messages_per_second
        if (
            state.waiting
            and rate
            and state.tokens < 1.0
            and (current.connections is None or state.active < current.connections)
        ):
            # Only the rate holds them: come back when the next token is in.
            delay = (1.0 - state.tokens) / rate
            state.timer = asyncio.get_running_loop().call_later(delay, self._pump, state)

    def _release_waiters(self, state: _State) -> None:
        """A pause began: waiters go back to the ladder now."""
        held = Held(HeldReason.PAUSED, max(0.0, state.backoff.paused_until - self.clock()))
        for _, _, future in state.waiters:
            if not future.done():
                future.set_result(held)
        state.waiters.clear()
        state.waiting = 0

    def _trim(self, state: _State, now: float) -> None:
        connections = self._share(state, now).connections
        if connections is not None and state.sessions > connections:
            self.trim(state.destination.key, connections)
        if state.backoff.paused(now):
            self._release_waiters(state)

    def _members_changed(self) -> None:
        now = self.clock()
        for state in list(self._states.values()):
            self._trim(state, now)
            self._pump(state)

    def _forget_if_idle(self, state: _State) -> None:
        """Note when a destination fell idle; :meth:`_sweep` forgets it later (its
        rate bucket and transaction time matter to the next job that comes soon)."""
        if state.active == 0 and state.waiting == 0 and state.sessions == 0:
            state.idle_since = self.clock()

    def _sweep(self, now: float) -> None:
        """Forget the destinations idle for a while, so the table stays small."""
        self._swept = now
        for key, state in list(self._states.items()):
            if (
                state.active == 0
                and state.waiting == 0
                and state.sessions == 0
                and now - state.idle_since >= FORGET_AFTER
                and state.backoff.calm
            ):
                if state.timer is not None:
                    state.timer.cancel()
                if state.expiries is not None:
                    state.expiries.close()
                del self._states[key]

    # --- what others see -----------------------------------------------------

    def _export(self, state: _State, current: Share, now: float) -> None:
        total = backed_off(state.limits, state.backoff.factor(now))
        label = state.label
        if total.connections is not None:
            metrics.SHAPING_LIMIT.labels(label, "connections").set(total.connections)
            metrics.SHAPING_SHARE.labels(label, "connections").set(current.connections or 0)
        if total.messages_per_second is not None:
            metrics.SHAPING_LIMIT.labels(label, "messages_per_second").set(
                total.messages_per_second
            )
            metrics.SHAPING_SHARE.labels(label, "messages_per_second").set(
                current.messages_per_second or 0.0
            )

    def report(self, limit: int = 50) -> list[mpb.DestinationState]:
        """The busiest destinations as this process sees them, for heartbeats."""
        now = self.clock()
        states = sorted(
            self._states.values(), key=lambda s: s.active + s.waiting + s.sessions, reverse=True
        )[:limit]
        report = []
        for state in states:
            factor = state.backoff.factor(now)
            current = self._share(state, now)
            total = backed_off(state.limits, factor)
            report.append(
                mpb.DestinationState(
                    key=state.destination.key,
                    max_connections=total.connections or 0,
                    max_messages_per_second=total.messages_per_second or 0.0,
                    connections_share=current.connections or 0,
                    messages_per_second_share=current.messages_per_second or 0.0,
                    backoff_factor=factor,
                    paused_for=max(0.0, state.backoff.paused_until - now),
                    sessions=state.sessions,
                    waiting=state.waiting,
                )
            )
        return report


def _done(future: asyncio.Future[Permit | Held]) -> bool:
    return future.done()
