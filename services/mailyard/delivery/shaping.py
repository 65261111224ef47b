"""Which limits a job's destination has, and this process's share of them — no I/O.

A destination is a recipient domain, or a site: a key with ``*`` is a
pattern on MX host names, and every domain whose MX hosts match it shares
one set of limits (all the domains on Google's MX are one site, as in
KumoMTA). A domain's own key wins over a site; a site is matched on the MX
hosts in preference order, the first host any pattern matches deciding.

The limits hold for the cluster: each of ``members`` live delivery
processes takes an equal share, the remainder of a connection limit going
to the lowest ranks, so the shares always add up to the limit exactly (a
process whose share is 0 hands that destination's jobs back to the retry
ladder). How the members know of one another is ``mailyard.broker``'s
membership; why this scheme, in docs/scaling.md.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import yaml

from mailyard.config import ShapingConfig, ShapingLimits


@dataclass(frozen=True, slots=True)
class Limits:
    """One destination's limits for the whole cluster (None: no limit)."""

    max_connections: int | None
    max_messages_per_second: float | None
    max_messages_per_connection: int

    @property
    def unlimited(self) -> bool:
        return self.max_connections is None and self.max_messages_per_second is None


@dataclass(frozen=True, slots=True)
class Destination:
    key: str  # the domain, or the site pattern
    limits: Limits


@dataclass(frozen=True, slots=True)
class Share:
    """What one process may use of a destination's limits right now."""

    connections: int | None  # None: no limit
    messages_per_second: float | None


class ShapingTable:
    """``shaping.destinations`` over the shipped entries, over ``shaping.default``."""

    def __init__(
        self, config: ShapingConfig, shipped: Mapping[str, ShapingLimits] | None = None
    ) -> None:
        default = config.default
        self.default = Limits(
            default.max_connections,
            default.max_messages_per_second,
            default.max_messages_per_connection,
        )
        entries: dict[str, dict[str, object]] = {}
        shipped = shipped_destinations() if shipped is None else shipped
        for source in (shipped, config.destinations):
            for key, limits in source.items():
                given = limits.model_dump(include=limits.model_fields_set)
                entries.setdefault(key, {}).update(given)
        self.destinations = {key: self._limits(values) for key, values in entries.items()}
        self.sites = tuple(key for key in self.destinations if "*" in key)
        self._site_of = functools.lru_cache(maxsize=4096)(self._match_site)

    def _limits(self, values: Mapping[str, object]) -> Limits:
        merged = {
            "max_connections": self.default.max_connections,
            "max_messages_per_second": self.default.max_messages_per_second,
            "max_messages_per_connection": self.default.max_messages_per_connection,
            **values,
        }
        per_connection = merged["max_messages_per_connection"]
        return Limits(
            merged["max_connections"],  # type: ignore[arg-type]
            merged["max_messages_per_second"],  # type: ignore[arg-type]
            self.default.max_messages_per_connection if per_connection is None else per_connection,  # type: ignore[arg-type]
        )

    def needs_mx(self, domain: str) -> bool:
        """Whether the MX host names can change which destination ``domain`` is."""
        return bool(self.sites) and domain not in self.destinations

    def destination(self, domain: str, mx_hosts: Sequence[str] = ()) -> Destination:
        if (own := self.destinations.get(domain)) is not None:
            return Destination(domain, own)
        for host in mx_hosts:
            if (site := self._site_of(host.lower().rstrip("."))) is not None:
                return Destination(site, self.destinations[site])
        return Destination(domain, self.default)

    def _match_site(self, host: str) -> str | None:
        for pattern in self.sites:
            if fnmatch.fnmatchcase(host, pattern):
                return pattern
        return None


def backed_off(limits: Limits, factor: float) -> Share:
    """The cluster's limits scaled by the backoff ``factor``: ``floor(limit * factor)``
    connections (at least 1), and the rate times the factor."""
    connections = None
    if limits.max_connections is not None:
        connections = max(1, math.floor(limits.max_connections * factor))
    rate = None
    if limits.max_messages_per_second is not None:
        rate = limits.max_messages_per_second * factor
    return Share(connections, rate)


def share(limits: Limits, *, factor: float, members: int, rank: int) -> Share:
    """This process's part of ``limits`` scaled by the backoff ``factor``.

    Connections: the backed-off limit split so that the ranks below the
    remainder get one more; the shares sum to the limit. Rate: an equal part.
    """
    members = max(members, 1)
    total = backed_off(limits, factor)
    connections = None
    if total.connections is not None:
        connections = total.connections // members + (
            1 if rank < total.connections % members else 0
        )
    rate = None
    if total.messages_per_second is not None:
        rate = total.messages_per_second / members
    return Share(connections, rate)


@functools.cache
def shipped_destinations() -> dict[str, ShapingLimits]:
    text = resources.files("mailyard").joinpath("rules/shaping.yaml").read_text()
    return dict(ShapingConfig.model_validate(yaml.safe_load(text)).destinations)
