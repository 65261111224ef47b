"""Slowing down when a destination says so: reply-driven backoff — no I/O.

Large mailbox providers answer a sender that goes too fast with ``421`` or
``4.7.x`` replies ("try again later", "too many connections"), then block
it if it keeps on. The rules (``rules/throttling.yaml``, after the user's
``delivery.shaping.backoff.rules_files``) say which replies mean that; each
state here follows one destination in one process:

- a throttling reply halves the destination's factor (its connections and
  rate), at most once per ``recovery_interval / 4`` so that a burst of
  replies from sessions that were open at once counts as one signal;
- every ``recovery_interval`` without one doubles the factor back, step
  by step, up to 1;
- ``pause_after`` such signals in a row, with no delivery between them
  (so at least ``pause_after * recovery_interval / 4`` of nothing but
  throttling), or a reply whose rule says ``pause``, pause the destination
  for ``pause``: its jobs wait in the retry ladder.

The factor never goes below what leaves one connection (delivery/shaping.py
keeps at least one), so a destination that only throttles still gets mail.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mailyard.filewatch import FileProblem
from mailyard.reply import Reply
from mailyard.replyrules import (
    CONDITIONS,
    Conditions,
    read_rules_files,
    reply_conditions,
    rule_entries,
)

MIN_FACTOR = 1 / 64


class Action(StrEnum):
    THROTTLE = "throttle"
    PAUSE = "pause"
    NONE = "none"


class ThrottlingRulesError(FileProblem):
    """A throttling rules file cannot be used; names the file and the rule."""


@dataclass(frozen=True, slots=True)
class ThrottlingRule:
    action: Action
    conditions: Conditions


class ThrottlingRules:
    """The rules of ``files`` (in order), then the defaults; the first match wins."""

    def __init__(self, files: Sequence[Path] = (), *, key: str = "rules_files") -> None:
        mine = [
            rule
            for text, source in read_rules_files(files, key, ThrottlingRulesError)
            for rule in load_rules(text, source)
        ]
        self.rules = (*mine, *default_rules())
        self.action = functools.lru_cache(maxsize=4096)(self._action)

    def _action(self, reply: Reply) -> Action:
        if reply.code < 400 or reply.code >= 500:
            return Action.NONE  # only a temporary failure asks us to slow down
        for rule in self.rules:
            if rule.conditions.match(reply):
                return rule.action
        return Action.NONE


@functools.cache
def default_rules() -> tuple[ThrottlingRule, ...]:
    text = resources.files("mailyard").joinpath("rules/throttling.yaml").read_text()
    return tuple(load_rules(text, "the default throttling rules"))


def load_rules(text: str, source: str) -> list[ThrottlingRule]:
    """``rules:``, a list of ``{action, code?, status?, text?}``."""
    entries = rule_entries(text, source, ThrottlingRulesError)
    return [_rule(entry, where) for entry, where in entries]


def _rule(entry: dict[str, Any], where: str) -> ThrottlingRule:
    unknown = set(entry) - {"action", *CONDITIONS}
    if unknown:
        raise ThrottlingRulesError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        action = Action(str(entry.get("action")))
    except ValueError:
        raise ThrottlingRulesError(
            f"{where}: action {entry.get('action')!r} is not one of {', '.join(Action)}"
        ) from None
    return ThrottlingRule(action, Conditions(*reply_conditions(entry, where, ThrottlingRulesError)))


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    recovery_interval: float  # seconds
    pause_after: int
    pause: float  # seconds


class Backoff:
    """One destination's backoff in one process; times are monotonic seconds."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._factor = 1.0
        self._since = 0.0  # when the factor last changed
        self._streak = 0  # throttled attempts since the last delivery
        self.paused_until = 0.0

    def factor(self, now: float) -> float:
        """The factor at ``now``: doubled back once per recovery interval since it last changed."""
        if self._factor < 1.0:
            steps = int((now - self._since) // self.policy.recovery_interval)
            if steps > 0:
                self._factor = min(1.0, self._factor * 2**steps)
                self._since += steps * self.policy.recovery_interval
        return self._factor

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    @property
    def calm(self) -> bool:
        """Nothing to remember: the state may be forgotten."""
        return self._factor >= 1.0 and self._streak == 0 and self.paused_until == 0.0

    def throttled(self, now: float, action: Action) -> None:
        """An attempt that a throttling rule's reply ended."""
        factor = self.factor(now)
        if now - self._since >= self.policy.recovery_interval / 4 or factor >= 1.0:
            self._factor = max(MIN_FACTOR, factor / 2)
            self._since = now
            self._streak += 1  # one signal, however many sessions it came on
        if action is Action.PAUSE or self._streak >= self.policy.pause_after:
            self.paused_until = now + self.policy.pause
            self._streak = 0

    def delivered(self, now: float) -> None:
        """An attempt that the destination accepted mail in."""
        self._streak = 0
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
