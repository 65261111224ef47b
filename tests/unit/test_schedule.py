"""after_deferral: the retry ladder and the message lifetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailyard.queue.schedule import Expire, Retry, after_deferral

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
LADDER = [timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=20), timedelta(hours=1)]


def step(attempts: int, *, expires_at: datetime = NOW + timedelta(days=1), now: datetime = NOW):
    return after_deferral(attempts=attempts, expires_at=expires_at, now=now, retry_delays=LADDER)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, timedelta(minutes=5)),  # defensively: treated as the first attempt
        (1, timedelta(minutes=5)),
        (2, timedelta(minutes=10)),
        (3, timedelta(minutes=20)),
        (4, timedelta(hours=1)),
        (5, timedelta(hours=1)),  # the last delay repeats
        (100, timedelta(hours=1)),
    ],
)
def test_ladder(attempts, delay):
    assert step(attempts) == Retry(delay)


def test_single_delay_ladder_repeats():
    for attempts in (1, 2, 10):
        assert after_deferral(
            attempts=attempts,
            expires_at=NOW + timedelta(hours=1),
            now=NOW,
            retry_delays=[timedelta(seconds=30)],
        ) == Retry(timedelta(seconds=30))


@pytest.mark.parametrize(
    "now",
    [NOW + timedelta(days=1), NOW + timedelta(days=1, microseconds=1), NOW + timedelta(days=30)],
)
def test_expires_once_now_reaches_expires_at(now):
    assert step(3, now=now) == Expire()


def test_retries_just_before_expiry_even_if_the_delay_runs_past_it():
    now = NOW + timedelta(days=1) - timedelta(microseconds=1)
    assert step(4, now=now) == Retry(timedelta(hours=1))


def test_expires_on_first_deferral_when_already_too_old():
    assert step(1, expires_at=NOW - timedelta(seconds=1)) == Expire()
