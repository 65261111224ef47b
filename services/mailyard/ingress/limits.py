"""Per-client and process-wide limits of the SMTP ingress — no I/O.

- :class:`ClientConnections`: concurrent connections and new connections per
  minute from one address (Postfix's ``smtpd_client_connection_count_limit``
  and ``..._rate_limit``; anvil keeps these for Postfix);
- :class:`DataMemory`: what all sessions' DATA and BDAT may hold in memory
  together, so that many large uploads at once cannot exhaust the pod.

Clients in ``relay_networks`` (the applications' own networks) are exempt
from the per-client limits, as Postfix exempts ``$mynetworks``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


def client_key(address: str) -> str:
    """One key per client: an IPv4-mapped IPv6 address counts as its IPv4 form."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@dataclass
class ClientConnections:
    per_client: int
    rate_per_minute: int  # 0: no rate limit
    clock: Callable[[], float] = time.monotonic
    max_clients: int = 100_000  # bounded memory, whatever the number of addresses seen
    _open: dict[str, int] = field(default_factory=dict)
    _recent: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def admit(self, address: str) -> str | None:
        """Count a new connection; the limit it breaks (a metric reason), or None."""
        key = client_key(address)
        if self._open.get(key, 0) >= self.per_client:
            return "connections_per_client"
        if self.rate_per_minute:
            now = self.clock()
            recent = self._recent.pop(key, None) or deque()
            while recent and now - recent[0] >= 60:
                recent.popleft()
            if len(recent) >= self.rate_per_minute:
                self._recent[key] = recent
                return "connection_rate"
            recent.append(now)
            self._recent[key] = recent
            while len(self._recent) > self.max_clients:
                self._recent.popitem(last=False)
        self._open[key] = self._open.get(key, 0) + 1
        return None

    def release(self, address: str) -> None:
        key = client_key(address)
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open_from(self, address: str) -> int:
        return self._open.get(client_key(address), 0)


@dataclass
class DataMemory:
    """A budget of bytes shared by every session's message upload."""

    limit: int
    used: int = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (and nothing reserved) when they do not fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit
