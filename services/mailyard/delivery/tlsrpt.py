"""SMTP TLS Reporting (RFC 8460), the pure part: the TXT record, the counts, the report.

Theory of operation. Delivery names the outcome of every TLS negotiation it
starts once (``tlsresult.py``) and hands it here with the policy the session
was held to: :class:`TlsCounts` adds it up per policy domain, and
:meth:`TlsCounts.take` closes an interval and starts the next. For each
domain of a closed interval the sender (``tlsrpt_send.py``) looks up
``_smtp._tls.<domain>``; :func:`parse_record` says where its reports go,
:func:`report_document` is the JSON of §4.4, and ``tlsrpt_mail.py`` wraps it
for §5. No clock, no I/O here.

Memory is bounded: at most ``max_domains`` policy domains and
``max_failure_details`` failure-details rows per interval. A session of a
domain past the first cap is not counted at all; a failure past the second
still counts in its policy's summary, only its row is missing. Both say so
(:class:`Counted`), for the metrics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from mailyard.delivery.tlsresult import PolicyType, ReportedPolicy, ResultType

MAX_URIS = 5  # rua URIs used from one record: a hostile record must not fan out
_VERSION = re.compile(r"v=TLSRPTv1[ \t]*(;|$)")
_FIELD = re.compile(r"[ \t]*([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=(.*?)[ \t]*")
_MAILBOX = re.compile(r"[^@\s<>()\[\],;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")


# --- §3: the _smtp._tls TXT record --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """Where a domain wants its reports: addresses (``mailto:``) and URLs (``https:``)."""

    mailto: tuple[str, ...] = ()
    https: tuple[str, ...] = ()


def parse_record(strings: Sequence[str]) -> Record | None:
    """The destinations of the one ``v=TLSRPTv1`` record among a name's TXT records.

    §3: records that do not begin with ``v=TLSRPTv1`` are discarded; unless
    exactly one is left, the domain does not do TLSRPT. Unknown fields are
    ignored, and so are URIs of other schemes than mailto and https; a record
    left without a usable ``rua`` means no report either. Each record's
    strings are already joined.
    """
    found = [text for text in strings if _VERSION.match(text)]
    if len(found) != 1:
        return None
    fields = dict(_fields(found[0]))
    mailto: list[str] = []
    https: list[str] = []
    for uri in (part.strip(" \t") for part in fields.get("rua", "").split(",")):
        scheme, colon, rest = uri.partition(":")
        scheme = scheme.lower()
        if not colon:
            continue
        if scheme == "mailto":
            address = _mailbox(rest)
            if address is not None and address not in mailto:
                mailto.append(address)
        elif scheme == "https":
            url = _https(uri)
            if url is not None and url not in https:
                https.append(url)
    mailto, https = mailto[:MAX_URIS], https[: max(0, MAX_URIS - len(mailto))]
    if not mailto and not https:
        return None
    return Record(tuple(mailto), tuple(https))


def _fields(text: str) -> list[tuple[str, str]]:
    found = []
    for part in text.split(";")[1:]:
        match = _FIELD.fullmatch(part)
        if match is not None:
            found.append((match.group(1).lower(), match.group(2)))
    return found


def _mailbox(rest: str) -> str | None:
    """``tlsrpt@example.com`` of ``mailto:tlsrpt@example.com?subject=…`` (RFC 6068)."""
    address = unquote(rest.partition("?")[0]).strip()
    if not _MAILBOX.fullmatch(address) or ".." in address.rpartition("@")[2]:
        return None
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"


def _https(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or any(c in uri for c in " \t\r\n"):
        return None
    return uri


# --- counting ------------------------------------------------------------------------


class Counted(StrEnum):
    """What became of one session handed to :class:`TlsCounts`."""

    COUNTED = "counted"
    NO_ROOM = "policy"  # its domain did not fit under max_domains: not counted
    NO_DETAIL = "failure_detail"  # counted in the summary; no room for its row


@dataclass(frozen=True, slots=True)
class Detail:
    """One failure-details row's key (§4.4): what failed, where."""

    result: ResultType
    mx: str = ""  # receiving-mx-hostname ("" when no MX was involved: an MTA-STS fetch)
    address: str = ""  # receiving-ip


@dataclass(slots=True)
class DetailCount:
    sessions: int = 0
    reason: str = ""  # failure-reason-code: the first one seen, the others are alike


@dataclass(slots=True)
class PolicyCount:
    policy: ReportedPolicy
    successes: int = 0
    failures: int = 0
    details: dict[Detail, DetailCount] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DomainReport:
    """One policy domain's counts for one interval: what one report says."""

    domain: str
    start: datetime
    end: datetime
    policies: tuple[PolicyCount, ...]

    @property
    def successes(self) -> int:
        return sum(p.successes for p in self.policies)

    @property
    def failures(self) -> int:
        return sum(p.failures for p in self.policies)


class TlsCounts:
    """Sessions per policy domain and policy for the interval under way."""

    def __init__(self, start: datetime, *, max_domains: int, max_failure_details: int) -> None:
        self.start = start
        self.max_domains = max_domains
        self.max_failure_details = max_failure_details
        self._domains: dict[str, dict[ReportedPolicy, PolicyCount]] = {}
        self._details = 0

    def success(self, policy: ReportedPolicy) -> Counted:
        count = self._policy(policy)
        if count is None:
            return Counted.NO_ROOM
        count.successes += 1
        return Counted.COUNTED

    def failure(
        self,
        policy: ReportedPolicy,
        result: ResultType,
        *,
        mx: str = "",
        address: str = "",
        reason: str = "",
    ) -> Counted:
        count = self._policy(policy)
        if count is None:
            return Counted.NO_ROOM
        count.failures += 1
        key = Detail(result, mx.lower().rstrip("."), address)
        detail = count.details.get(key)
        if detail is None:
            if self._details >= self.max_failure_details:
                return Counted.NO_DETAIL
            self._details += 1
            detail = count.details[key] = DetailCount(reason=reason[:200])
        detail.sessions += 1
        return Counted.COUNTED

    def _policy(self, policy: ReportedPolicy) -> PolicyCount | None:
        domain = policy.domain.lower().rstrip(".")
        policies = self._domains.get(domain)
        if policies is None:
            if len(self._domains) >= self.max_domains:
                return None
            policies = self._domains[domain] = {}
        count = policies.get(policy)
        if count is None:
            count = policies[policy] = PolicyCount(policy)
        return count

    def __len__(self) -> int:
        return len(self._domains)

    def take(self, end: datetime) -> list[DomainReport]:
        """The interval from ``start`` to ``end``, by domain; counting goes on from ``end``."""
        taken = [
            DomainReport(domain, self.start, end, tuple(policies.values()))
            for domain, policies in self._domains.items()
        ]
        self.start = end
        self._domains = {}
        self._details = 0
        return taken


def interval_end(now: datetime, interval: timedelta) -> datetime:
    """The end of the interval ``now`` falls in: the next multiple of ``interval`` since
    the epoch, so that a day runs from 00:00 to 24:00 UTC (§4.1)."""
    length = interval.total_seconds()
    return datetime.fromtimestamp((math.floor(now.timestamp() / length) + 1) * length, UTC)


def no_policy(domain: str) -> ReportedPolicy:
    """§4.4 ``no-policy-found``: a domain that publishes neither MTA-STS nor DANE."""
    return ReportedPolicy(PolicyType.NO_POLICY, domain.lower().rstrip("."))


# --- §4.4: the report ----------------------------------------------------------------


def report_id(start: datetime, replica: str, sequence: int, hostname: str) -> str:
    """Unique per replica, interval and domain; a msg-id (RFC 5322) for the Subject (§5.3)."""
    return f"{start.astimezone(UTC):%Y%m%dT%H%M%SZ}.{replica}.{sequence}@{hostname}"


def report_document(
    report: DomainReport, *, organization: str, contact: str, report_id: str
) -> dict[str, Any]:
    """The report of §4.4, as JSON-ready values, its field names the RFC's."""
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": rfc3339(report.start),
            "end-datetime": rfc3339(report.end),
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": [_policy_entry(count) for count in report.policies],
    }


def _policy_entry(count: PolicyCount) -> dict[str, Any]:
    policy: dict[str, Any] = {"policy-type": count.policy.type.value}
    if count.policy.strings:
        policy["policy-string"] = list(count.policy.strings)
    policy["policy-domain"] = count.policy.domain
    if count.policy.mx_hosts:
        policy["mx-host"] = list(count.policy.mx_hosts)
    entry: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": count.successes,
            "total-failure-session-count": count.failures,
        },
    }
    if count.details:
        entry["failure-details"] = [
            _detail_entry(key, detail) for key, detail in count.details.items()
        ]
    return entry


def _detail_entry(key: Detail, detail: DetailCount) -> dict[str, Any]:
    # sending-mta-ip and receiving-ip are always there, "" when unknown: report
    # parsers in the wild read both unconditionally. Our own address is unknown:
    # behind a NAT (a pod) the socket's is not the one the receiver saw.
    entry: dict[str, Any] = {"result-type": key.result.value, "sending-mta-ip": ""}
    if key.mx:
        entry["receiving-mx-hostname"] = key.mx
    entry["receiving-ip"] = key.address
    entry["failed-session-count"] = detail.sessions
    if detail.reason:
        entry["failure-reason-code"] = detail.reason
    return entry


def rfc3339(moment: datetime) -> str:
    """``2026-12-01T00:00:00Z``: RFC 3339 in UTC, to the second, as §4.4's examples."""
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
