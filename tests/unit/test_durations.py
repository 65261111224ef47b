"""parse_duration / format_duration: the forms admins write, and stable queue names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailyard.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("5d", timedelta(days=5)),
        ("2w", timedelta(weeks=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1s500ms", timedelta(seconds=1.5)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        ("5M", timedelta(minutes=5)),  # case-insensitive; M is minutes, not months
        (" 5m ", timedelta(minutes=5)),
        ("300", timedelta(seconds=300)),
        ("2.5", timedelta(seconds=2.5)),
        (90, timedelta(seconds=90)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "5x",
        "",
        "   ",
        "-1s",
        "-5",
        "5y",
        "m",
        "5 m",
        "1h 30m",
        "1h30",
        "h1",
        "5mm",
        "1.2.3s",
        "1e3s",
        "five minutes",
        -1,
        -0.5,
        True,
        False,
        None,
        [5],
        b"5m",
    ],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):  # noqa: PT011 - messages are checked below
        parse_duration(value)


def test_rejection_messages_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"'5x' is not a duration like '90s', '5m'"):
        parse_duration("5x")
    with pytest.raises(ValueError, match="empty duration"):
        parse_duration("")
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="number of seconds"):
        parse_duration(True)


@pytest.mark.parametrize("value", ["9999999999d", float("inf")])
def test_out_of_range_duration_is_a_value_error(value):
    with pytest.raises(ValueError):  # noqa: PT011
        parse_duration(value)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=1), "1s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(seconds=5400), "1h30m"),
        (timedelta(hours=4), "4h"),
        (timedelta(days=5), "5d"),
        (timedelta(weeks=1), "7d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(seconds=1.5), "1s500ms"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(milliseconds=1), "1ms"),
        (timedelta(microseconds=400), "0s"),  # rounded to whole milliseconds
    ],
)
def test_format_duration_canonical_names(delay, expected):
    assert format_duration(delay) == expected


@pytest.mark.parametrize(
    "delay",
    [
        timedelta(milliseconds=1),
        timedelta(milliseconds=999),
        timedelta(seconds=59),
        timedelta(minutes=5),
        timedelta(minutes=40),
        timedelta(hours=1, minutes=30),
        timedelta(hours=23, minutes=59, seconds=59, milliseconds=999),
        timedelta(days=5),
        timedelta(days=400, seconds=3661, milliseconds=7),
    ],
)
def test_format_then_parse_round_trips(delay):
    assert parse_duration(format_duration(delay)) == delay


@pytest.mark.parametrize("text", ["300s", "5m", "0.0833333333333h", "300000ms", "300"])
def test_equal_durations_get_one_name(text):
    assert format_duration(parse_duration(text)) == "5m"
