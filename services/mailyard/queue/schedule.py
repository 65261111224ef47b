"""The retry ladder and the message lifetime: what to do after a deferral.

After the n-th failed attempt a job waits ``retry_delays[n-1]`` (the last
delay repeats). Once the message is older than its lifetime, the next
deferral expires it instead, as Postfix's ``maximal_queue_lifetime`` does:
so the last attempt can come up to one delay after the lifetime, never
before it.

The delay warning (``queue.delay_warning``, Postfix's
``delay_warning_time``) is decided at the same moment, and the same way:
the first deferral at least that long after acceptance warns the sender,
once (the job remembers it); so a warning too can come up to one retry
delay late, never early. A deferral that expires the job warns of nothing:
its failure notice says it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Jitter: a retry comes back after 80 to 100 % of its delay, at random, so
# that the thousands of jobs a destination deferred at once (an outage, a
# throttle) do not all come back in the same second.
RETRY_SPREAD = 0.2


@dataclass(frozen=True)
class Retry:
    delay: timedelta


@dataclass(frozen=True)
class Expire:
    pass


def after_deferral(
    *, attempts: int, expires_at: datetime, now: datetime, retry_delays: Sequence[timedelta]
) -> Retry | Expire:
    if now >= expires_at:
        return Expire()
    step = min(max(attempts, 1), len(retry_delays)) - 1
    return Retry(retry_delays[step])


def delay_warning_due(
    *, received_at: datetime, now: datetime, delay_warning: timedelta | None, warned: bool
) -> bool:
    """Whether this deferral (one that retries) crosses ``delay_warning`` for the first time."""
    if delay_warning is None or warned:
        return False
    return now - received_at >= delay_warning
