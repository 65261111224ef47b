"""Destinations delivery must not connect to — no I/O.

An MX or A record can point anywhere: at loopback, at the cloud's metadata
service (169.254.169.254), at the cluster's own pods. Delivery would then
carry whatever a sender wrote to a service that trusts the network. So an
address in ``delivery.prohibited_networks`` is never connected to; a
destination left with none is a permanent ``5.4.4``. An MX that is our own
``hostname`` is a loop (``5.4.6``, RFC 5321 §5.1). The smarthost, which
the operator names, is exempt.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from mailyard.delivery.resolver import MailHost, RouteError
from mailyard.reply import Reply

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Safety:
    prohibited: tuple[Network, ...]
    hostname: str  # ours: an MX with this name is a loop
    # Verdicts by address: routes are cached, so the same few addresses come
    # back for every job, and parsing them each time showed in the profile.
    _verdicts: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, prohibited: Iterable[Network], hostname: str) -> Safety:
        return cls(tuple(prohibited), hostname.lower().rstrip("."))

    def allows(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            if len(self._verdicts) > 100_000:
                self._verdicts.clear()
            verdict = self._verdicts[address] = self._allows(address)
        return verdict

    def _allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return not any(ip in network for network in self.prohibited)

    def filter(self, domain: str, hosts: Sequence[MailHost]) -> list[MailHost]:
        """The hosts (and addresses) that may be used; RouteError when none is left."""
        if any(host.name.lower().rstrip(".") == self.hostname for host in hosts):
            raise RouteError(
                Reply(554, "5.4.6", f"mail for {domain} loops back to myself ({self.hostname})"),
                "loop",
            )
        safe = []
        for host in hosts:
            addresses = tuple(a for a in host.addresses if self.allows(a))
            if addresses == host.addresses:
                safe.append(host)  # the usual case: no copy (dataclasses.replace costs)
            elif addresses:
                safe.append(replace(host, addresses=addresses))
        if not safe:
            shown = ", ".join(a for host in hosts for a in host.addresses)[:200]
            raise RouteError(
                Reply(550, "5.4.4", f"{domain}'s mail hosts are on prohibited networks ({shown})"),
                "prohibited",
            )
        return safe
