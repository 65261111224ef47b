"""Who else is delivering: the table of live members of a group — no I/O.

Every delivery process sends a heartbeat every ``interval`` to all the
others (on RabbitMQ a fanout exchange; an embedded spool has one member),
and each keeps this table. A member not heard from for three intervals is
counted out, so the survivors take up a dead process's share of every
destination's limits within a few seconds; one that says it is leaving is
counted out at once.

A process that does not hear its own beats any more (it lost the broker) is
the one that is cut off, not the others: it then forgets nobody, and keeps
the count it last had, so that it never takes more than its share.

Members are ranked by id, the same order in every process, so that the
remainder of a limit that does not divide evenly goes to the same members
in every process's eyes (delivery/shaping.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailyard.v1 import members_pb2 as mpb

EXPIRY_BEATS = 3


@dataclass
class Member:
    id: str
    last_seen: float
    beat: mpb.Heartbeat = field(default_factory=mpb.Heartbeat)


class MemberTable:
    def __init__(self, me: str, *, interval: float, now: float) -> None:
        self.me = me
        self.expiry = EXPIRY_BEATS * interval
        self.members: dict[str, Member] = {me: Member(me, now)}
        self._heard_myself = now

    def heard(self, beat: mpb.Heartbeat, now: float) -> bool:
        """Take in one heartbeat; True when the membership changed."""
        if beat.member == self.me:
            self._heard_myself = now
            self.members[self.me].beat = beat
            return False
        if beat.leaving:
            return self.members.pop(beat.member, None) is not None
        known = self.members.get(beat.member)
        if known is None:
            self.members[beat.member] = Member(beat.member, now, beat)
            return True
        known.last_seen = now
        known.beat = beat
        return False

    def expire(self, now: float) -> bool:
        """Count out the silent; True when the membership changed."""
        if now - self._heard_myself > self.expiry:
            return False  # we are the one cut off: keep our share small
        silent = [
            m
            for m in self.members
            if m != self.me and now - self.members[m].last_seen > self.expiry
        ]
        for member in silent:
            del self.members[member]
        return bool(silent)

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def rank(self) -> int:
        return sorted(self.members).index(self.me)


class SoleMember:
    """The membership of a process that is alone by construction (the embedded
    spool, tests): it holds every limit whole."""

    count = 1
    rank = 0

    def on_change(self, callback: Callable[[], None]) -> None:
        pass

    async def start(self, beat: Callable[[], mpb.Heartbeat]) -> None:
        pass

    async def stop(self) -> None:
        pass
