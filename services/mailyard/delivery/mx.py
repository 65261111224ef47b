"""Choosing mail exchangers from MX records (RFC 5321 §5.1, RFC 7505) — no I/O."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # lower case, without the trailing dot; "" is the root (".")


def is_null_mx(records: Iterable[MxRecord]) -> bool:
    """RFC 7505: a lone ``MX 0 .`` means the domain accepts no mail at all."""
    records = list(records)
    return len(records) == 1 and records[0].exchange == ""


def exchangers_in_order(records: Iterable[MxRecord], rng: random.Random) -> list[str]:
    """Hosts to try: lowest preference first, shuffled among equals, each once.

    A root exchange mixed in with real ones is a misconfiguration and is
    skipped rather than tried.
    """
    ordered = sorted((r for r in records if r.exchange), key=lambda r: r.preference)
    hosts: list[str] = []
    for _, group in groupby(ordered, key=lambda r: r.preference):
        names = [r.exchange for r in group]
        rng.shuffle(names)
        hosts.extend(name for name in names if name not in hosts)
    return hosts
