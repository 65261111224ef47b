"""Which TLS a destination gets: ``delivery.tls``, ``delivery.tls_policies``, the smarthost.

Three modes to configure, as Postfix's ``smtp_tls_security_level``:

- ``none``: never STARTTLS;
- ``opportunistic`` (Postfix's ``may``, RFC 7435): STARTTLS when offered,
  the certificate is not checked, a broken handshake falls back to clear;
- ``verify`` (Postfix's ``secure``): STARTTLS is required and the
  certificate must be valid for the MX host's name; otherwise the host is
  unusable (the next MX is tried, then the job is deferred), and nothing is
  ever sent in clear.

and one that DNS sets, per MX host, with ``delivery.dane.enabled``:

- ``dane`` (Postfix's ``dane``, RFC 7672): the host has TLSA records that
  DNSSEC vouches for. STARTTLS is required and the certificate must match
  one of the usable records (``dane.py``); with none usable, TLS is still
  required but nothing is checked (§2.2). A host that falls short is
  unusable, as under ``verify``.

Which wins: a ``tls_policies`` entry (the operator's word), then DANE (per
host: RFC 8461 §2 has DANE win over MTA-STS), then MTA-STS, then
``delivery.tls``.

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
    DANE = "dane"  # never configured: set per host by its TLSA records

    @property
    def requires_tls(self) -> bool:
        return self in (TlsMode.VERIFY, TlsMode.DANE)


class Verification(StrEnum):
    """How a session's certificate was checked."""

    NONE = "none"  # not at all (opportunistic, or DANE with only unusable records)
    WEBPKI = "webpki"  # against a CA and the MX host's name (verify, MTA-STS)
    DANE = "dane"  # against the host's TLSA records (RFC 7672)


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

    policy: str  # a TlsMode's name, "mta-sts" or "dane"
    version: str = ""  # "" when the session was in clear
    cipher: str = ""
    verified: bool = False

    @property
    def result(self) -> str:
        """``verified``, ``unverified`` (encrypted, certificate not checked) or ``clear``."""
        if not self.version:
            return "clear"
        return "verified" if self.verified else "unverified"


def not_offered(where: str, *, dane: bool = False) -> Reply:
    return Reply(451, "4.7.4", f"{_required(dane)}, but {where} did not offer STARTTLS")


def refused(where: str, reply: Reply, *, dane: bool = False) -> Reply:
    return Reply(451, "4.7.4", f"{_required(dane)}, but {where} refused STARTTLS: {reply.code}")


def _required(dane: bool) -> str:
    return "TLS is required by its TLSA records (DANE)" if dane else "TLS is required"


def tlsa_lookup_failed(host: str, detail: str) -> Reply:
    """RFC 7672 §2.1.1: a host whose TLSA records cannot be had is not used."""
    return Reply(451, "4.7.5", f"TLSA lookup for {host} failed, so DANE forbids using it: {detail}")


MTA_STS = "mta-sts"
DANE = "dane"


def verification_failed(where: str, reason: str) -> Reply:
    return Reply(451, "4.7.5", f"TLS is required, but {where} failed verification: {reason}")
