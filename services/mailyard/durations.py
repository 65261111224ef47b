"""Durations as people write them in configuration: ``90s``, ``5m``, ``1h30m``, ``5d``.

Hand-written because the forms mail admins use (Postfix's ``5d``, ``300s``)
are not ISO 8601, which is all pydantic parses natively.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST = 100 * 365 * 86400  # seconds; also rejects inf and nan
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> timedelta:
    """Parse ``"1h30m"``, ``"250ms"``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("empty duration")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            position, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != position:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                position = match.end()
            if position != len(text):
                raise ValueError(f"{value!r} is not a duration like '90s', '5m', '1h30m' or '5d'")
    else:
        raise ValueError(f"{value!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    if not seconds <= _LONGEST:
        raise ValueError(f"{value!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def format_duration(delay: timedelta) -> str:
    """The shortest canonical spelling: ``timedelta(seconds=5400)`` → ``"1h30m"``.

    Used in queue names (``<prefix>.retry.5m``), so it must be stable.
    """
    milliseconds = round(delay.total_seconds() * 1000)
    if milliseconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts)
