"""Job slots shared between message classes by weight — the decision, no I/O.

``delivery.concurrency`` slots; jobs of every class (``queue.classes``) ask
for one. While a slot is free, whoever asks gets it. When jobs of several
classes wait, the next free slot goes by weight: with ``transactional: 10,
bulk: 1``, ten transactional jobs for each bulk job, as long as both wait;
a class with nothing waiting leaves its share to the others, and a class
with jobs waiting always gets its share, however many others wait (bulk is
held back, never starved).

Theory of operation: start-time fair queueing (Goyal, Vin and Cheng, 1996),
one "packet" per job. Serving a job of class ``c`` costs ``1 / weight(c)``
of virtual time (integers here: the least common multiple of the weights,
divided by the weight, so that ten tenths make exactly one). A class that
starts waiting takes the later of its own last finish and the virtual time
now as its start, so time spent idle earns it no credit to spend later; a
class that keeps waiting starts where its last job finished. The waiting
class whose next job would finish first gets the slot (ties: the heavier
class, then the order of ``queue.classes``), and the virtual time moves to
that job's start.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

from mailyard.config import TRANSACTIONAL

W = TypeVar("W", bound=Hashable)


class FairShare(Generic[W]):
    """``slots`` slots shared by the classes of ``weights``; a waiter is any token.

    A class not in ``weights`` counts as transactional (a job from before a
    class was removed).
    """

    def __init__(self, slots: int, weights: Mapping[str, int]) -> None:
        if slots < 1:
            raise ValueError("at least one slot")
        if TRANSACTIONAL not in weights or any(w < 1 for w in weights.values()):
            raise ValueError("weights of at least 1, transactional's among them")
        self._free = slots
        self._order = list(weights)
        self._weight = dict(weights)
        scale = math.lcm(*weights.values())
        self._stride = {name: scale // weight for name, weight in weights.items()}
        self._finish = dict.fromkeys(weights, 0)  # of each class's last job served
        self._start = dict.fromkeys(weights, 0)  # of its next job, while it waits
        self._virtual = 0
        self._queues: dict[str, deque[W]] = {name: deque() for name in weights}
        self._waiting = dict.fromkeys(weights, 0)
        self._where: dict[W, str] = {}  # waiters still waiting, and their class

    @property
    def free(self) -> int:
        return self._free

    def waiting(self, mail_class: str) -> int:
        return self._waiting[self.class_of(mail_class)]

    def class_of(self, mail_class: str) -> str:
        return mail_class if mail_class in self._weight else TRANSACTIONAL

    def request(self, mail_class: str, waiter: W) -> bool:
        """Ask for a slot: True when ``waiter`` has it now, False when it waits
        (until a later :meth:`release` hands it one, or it is withdrawn)."""
        name = self.class_of(mail_class)
        if self._free:  # nobody waits while a slot is free
            self._free -= 1
            self._served(name, max(self._finish[name], self._virtual))
            return True
        if waiter in self._where:
            raise ValueError("this waiter waits already")
        if not self._waiting[name]:
            self._start[name] = max(self._finish[name], self._virtual)
        self._queues[name].append(waiter)
        self._where[waiter] = name
        self._waiting[name] += 1
        return False

    def withdraw(self, waiter: W) -> bool:
        """A waiter gives up (cancelled); False when it was not waiting (any more)."""
        name = self._where.pop(waiter, None)
        if name is None:
            return False
        self._waiting[name] -= 1
        if not self._waiting[name]:
            self._queues[name].clear()  # only withdrawn ones were left in it
        return True

    def release(self) -> W | None:
        """A slot comes back: the waiter it goes to now, or None (it stays free)."""
        name = self._next_class()
        if name is None:
            self._free += 1
            return None
        queue = self._queues[name]
        waiter = queue.popleft()
        while waiter not in self._where:  # withdrawn: skipped here, not searched for there
            waiter = queue.popleft()
        del self._where[waiter]
        self._waiting[name] -= 1
        self._served(name, self._start[name])
        return waiter

    def _next_class(self) -> str | None:
        best: str | None = None
        best_key: tuple[int, int, int] | None = None
        for index, name in enumerate(self._order):
            if not self._waiting[name]:
                continue
            key = (self._start[name] + self._stride[name], -self._weight[name], index)
            if best_key is None or key < best_key:
                best, best_key = name, key
        return best

    def _served(self, name: str, start: int) -> None:
        self._finish[name] = start + self._stride[name]
        self._virtual = max(self._virtual, start)
        if self._waiting[name]:
            self._start[name] = self._finish[name]
