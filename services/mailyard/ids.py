"""Identifiers that follow a message through the services."""

from __future__ import annotations

import random
import time

# Crockford's base32: no I, L, O, U, so ids read aloud and grep cleanly.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ids must be unique, not unguessable: a generator seeded from the OS once per
# process spares a getrandom() system call per message.
_random = random.Random()  # noqa: S311


def new_message_id() -> str:
    """A 26-character, time-ordered, unique id (the ULID layout).

    48 bits of milliseconds then 80 random bits, so ids sort by acceptance
    time in logs and queue listings. Hand-written because the stdlib has no
    time-ordered UUID before Python 3.14 and the format is 10 lines.
    """
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def queue_id(message_id: str, index: int) -> str:
    """The id of one destination's share of a message: ``<message_id>.<n>``."""
    return f"{message_id}.{index}"
