"""Which TLS a destination gets: ``delivery.tls``, ``delivery.tls_policies``, the smarthost.

Three modes, as Postfix's ``smtp_tls_security_level``:

- ``none``: never STARTTLS;
- ``opportunistic`` (Postfix's ``may``, RFC 7435): STARTTLS when offered,
  the certificate is not checked, a broken handshake falls back to clear;
- ``verify`` (Postfix's ``secure``): STARTTLS is required and the
  certificate must be valid for the MX host's name; otherwise the host is
  unusable (the next MX is tried, then the job is deferred), and nothing is
  ever sent in clear.

A ``tls_policies`` key is a domain (that domain only) or, with a leading
dot, every subdomain below it (``.example.com``), Postfix's habit; the
longest match wins, then ``delivery.tls``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mailyard.reply import Reply


class TlsMode(StrEnum):
    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    VERIFY = "verify"


@dataclass(frozen=True, slots=True)
class TlsPolicies:
    default: TlsMode = TlsMode.OPPORTUNISTIC
    by_domain: Mapping[str, TlsMode] = field(default_factory=dict)

    def mode_for(self, domain: str) -> TlsMode:
        return self.configured(domain) or self.default

    def configured(self, domain: str) -> TlsMode | None:
        """The mode ``tls_policies`` names for ``domain``, or None (then MTA-STS may speak)."""
        domain = domain.lower().rstrip(".")
        exact = self.by_domain.get(domain)
        if exact is not None:
            return exact
        labels = domain.split(".")
        for start in range(1, len(labels)):  # the nearest parent first
            parent = self.by_domain.get("." + ".".join(labels[start:]))
            if parent is not None:
                return parent
        return None


@dataclass(frozen=True, slots=True)
class TlsSummary:
    """What the session that carried a transaction was, for the event and the metrics."""

    policy: str  # a TlsMode's name, or "mta-sts"
    version: str = ""  # "" when the session was in clear
    cipher: str = ""
    verified: bool = False

    @property
    def result(self) -> str:
        """``verified``, ``unverified`` (encrypted, certificate not checked) or ``clear``."""
        if not self.version:
            return "clear"
        return "verified" if self.verified else "unverified"


def not_offered(where: str) -> Reply:
    return Reply(451, "4.7.4", f"TLS is required, but {where} did not offer STARTTLS")


def refused(where: str, reply: Reply) -> Reply:
    return Reply(451, "4.7.4", f"TLS is required, but {where} refused STARTTLS: {reply.code}")


MTA_STS = "mta-sts"


def verification_failed(where: str, reason: str) -> Reply:
    return Reply(451, "4.7.5", f"TLS is required, but {where} failed verification: {reason}")
