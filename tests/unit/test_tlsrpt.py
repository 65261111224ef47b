"""SMTP TLS Reporting (RFC 8460), the pure part: the TXT record, the counts, the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mailyard.delivery.tlsresult import PolicyType, ReportedPolicy, ResultType
from mailyard.delivery.tlsrpt import (
    MAX_URIS,
    Counted,
    Record,
    TlsCounts,
    interval_end,
    no_policy,
    parse_record,
    report_document,
    report_id,
)

START = datetime(2026, 12, 1, tzinfo=UTC)
END = START + timedelta(days=1)
STS = ReportedPolicy(
    PolicyType.STS,
    "example.net",
    ("version: STSv1", "mode: enforce", "mx: mx1.example.net", "max_age: 86400"),
    ("mx1.example.net",),
)
TLSA = ReportedPolicy(PolicyType.TLSA, "example.org", ("3 1 1 AB12",))

# --- §3: the record -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=TLSRPTv1; rua=mailto:tlsrpt@example.net"], Record(("tlsrpt@example.net",))),
        (
            ["v=TLSRPTv1;rua=https://reports.example.net/v1"],
            Record((), ("https://reports.example.net/v1",)),
        ),
        # Both schemes, spaces around the separators (§3's *WSP), a final ";".
        (
            ["v=TLSRPTv1 ; rua=mailto:a@example.net , https://r.example.net/tlsrpt ;"],
            Record(("a@example.net",), ("https://r.example.net/tlsrpt",)),
        ),
        # RFC 6068: hfields are not part of the address; %-encoding is decoded.
        (
            ["v=TLSRPTv1; rua=mailto:tls%2Dreports@Example.NET?subject=x"],
            Record(("tls-reports@example.net",)),
        ),
        # Unknown fields and other TXT records at the name are ignored.
        (
            ["v=spf1 -all", "v=TLSRPTv1; x-future=1; rua=mailto:r@example.net"],
            Record(("r@example.net",)),
        ),
        # The same URI twice counts once; schemes are case-insensitive.
        (["v=TLSRPTv1; rua=MAILTO:r@example.net,mailto:r@example.net"], Record(("r@example.net",))),
    ],
)
def test_a_record_says_where_reports_go(records: list[str], expected: Record) -> None:
    assert parse_record(records) == expected


@pytest.mark.parametrize(
    "records",
    [
        [],
        ["v=spf1 -all"],
        # §3: more than one TLSRPTv1 record means none.
        ["v=TLSRPTv1; rua=mailto:a@example.net", "v=TLSRPTv1; rua=mailto:b@example.net"],
        # Not version 1 (a prefix is not enough), or not first.
        ["v=TLSRPTv10; rua=mailto:a@example.net"],
        ["rua=mailto:a@example.net; v=TLSRPTv1"],
        ["v=tlsrptv1; rua=mailto:a@example.net"],
        # No rua, an empty one, only schemes nobody defined, garbage.
        ["v=TLSRPTv1"],
        ["v=TLSRPTv1; rua="],
        ["v=TLSRPTv1; rua=ftp://example.net/,http://example.net/report"],
        ["v=TLSRPTv1; rua=mailto:not-an-address,mailto:,https://"],
        ["v=TLSRPTv1; \x00\xff;;=;rua"],
        ["v=TLSRPTv1; rua=https://user:pw@example.net/, https://example.net:99999/"],
    ],
)
def test_no_usable_record_means_no_report(records: list[str]) -> None:
    assert parse_record(records) is None


def test_unknown_schemes_are_skipped_and_the_rest_kept() -> None:
    record = parse_record(["v=TLSRPTv1; rua=ftp://x.example/, mailto:r@example.net"])
    assert record == Record(("r@example.net",))


def test_a_record_cannot_fan_out_without_end() -> None:
    uris = ",".join(f"mailto:r{n}@example.net" for n in range(50))
    record = parse_record([f"v=TLSRPTv1; rua={uris},https://example.net/"])
    assert record is not None
    assert len(record.mailto) + len(record.https) == MAX_URIS


# --- counting -------------------------------------------------------------------------


def counts(**caps: int) -> TlsCounts:
    return TlsCounts(
        START, max_domains=caps.get("domains", 100), max_failure_details=caps.get("details", 100)
    )


def test_sessions_add_up_per_policy_and_failures_per_type_and_host() -> None:
    tally = counts()
    for _ in range(3):
        tally.success(STS)
    for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        tally.failure(STS, ResultType.CERTIFICATE_EXPIRED, mx="MX1.example.net.", address=address)
    tally.failure(STS, ResultType.STARTTLS_NOT_SUPPORTED, mx="mx1.example.net", address="192.0.2.1")
    tally.success(no_policy("Example.COM"))
    reports = {report.domain: report for report in tally.take(END)}
    assert set(reports) == {"example.net", "example.com"}
    [sts] = reports["example.net"].policies
    assert (sts.successes, sts.failures) == (3, 4)
    rows = {(d.result, d.mx, d.address): count.sessions for d, count in sts.details.items()}
    assert rows == {
        (ResultType.CERTIFICATE_EXPIRED, "mx1.example.net", "192.0.2.1"): 2,
        (ResultType.CERTIFICATE_EXPIRED, "mx1.example.net", "192.0.2.2"): 1,
        (ResultType.STARTTLS_NOT_SUPPORTED, "mx1.example.net", "192.0.2.1"): 1,
    }
    [nothing] = reports["example.com"].policies
    assert nothing.policy == ReportedPolicy(PolicyType.NO_POLICY, "example.com")
    assert (nothing.successes, nothing.failures) == (1, 0)


def test_one_domain_under_two_policies_is_one_report_with_both() -> None:
    """A policy published (or changed) in the middle of an interval."""
    tally = counts()
    tally.success(no_policy("example.net"))
    tally.failure(STS, ResultType.CERTIFICATE_HOST_MISMATCH, mx="mx1.example.net")
    [report] = tally.take(END)
    assert [count.policy.type for count in report.policies] == [
        PolicyType.NO_POLICY,
        PolicyType.STS,
    ]
    assert (report.successes, report.failures) == (1, 1)


def test_take_closes_the_interval_and_starts_the_next() -> None:
    tally = counts()
    tally.success(STS)
    [first] = tally.take(END)
    assert (first.start, first.end) == (START, END)
    assert tally.take(END + timedelta(days=1)) == []
    tally.success(TLSA)
    [second] = tally.take(END + timedelta(days=2))
    assert second.start == END + timedelta(days=1)
    assert second.domain == "example.org"


def test_domains_past_the_cap_are_not_counted() -> None:
    tally = counts(domains=2)
    assert tally.success(no_policy("a.example")) is Counted.COUNTED
    assert tally.success(no_policy("b.example")) is Counted.COUNTED
    assert tally.success(no_policy("c.example")) is Counted.NO_ROOM
    failed = tally.failure(no_policy("d.example"), ResultType.VALIDATION_FAILURE)
    assert failed is Counted.NO_ROOM
    assert tally.success(no_policy("a.example")) is Counted.COUNTED  # known ones go on
    assert sorted(r.domain for r in tally.take(END)) == ["a.example", "b.example"]
    assert tally.success(no_policy("c.example")) is Counted.COUNTED  # a new interval, room again


def test_failures_past_the_detail_cap_stay_in_the_summary() -> None:
    tally = counts(details=2)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        tally.failure(STS, ResultType.CERTIFICATE_EXPIRED, mx="mx1.example.net", address=address)
    counted = tally.failure(
        STS, ResultType.CERTIFICATE_EXPIRED, mx="mx1.example.net", address="192.0.2.1"
    )
    assert counted is Counted.COUNTED  # its row exists
    [report] = tally.take(END)
    [count] = report.policies
    assert count.failures == 4
    assert sum(detail.sessions for detail in count.details.values()) == 3
    assert len(count.details) == 2


def test_the_third_row_reports_no_detail() -> None:
    tally = counts(details=1)
    tally.failure(STS, ResultType.CERTIFICATE_EXPIRED, address="192.0.2.1")
    assert (
        tally.failure(STS, ResultType.CERTIFICATE_EXPIRED, address="192.0.2.2") is Counted.NO_DETAIL
    )


@pytest.mark.parametrize(
    ("now", "interval", "end"),
    [
        (
            datetime(2026, 12, 1, 15, 30, tzinfo=UTC),
            timedelta(days=1),
            datetime(2026, 12, 2, tzinfo=UTC),
        ),
        (datetime(2026, 12, 1, tzinfo=UTC), timedelta(days=1), datetime(2026, 12, 2, tzinfo=UTC)),
        (
            datetime(2026, 12, 1, 15, 30, tzinfo=UTC),
            timedelta(hours=6),
            datetime(2026, 12, 1, 18, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 1, 0, 0, 3, 500_000, tzinfo=UTC),
            timedelta(seconds=2),
            datetime(2026, 12, 1, 0, 0, 4, tzinfo=UTC),
        ),
    ],
)
def test_intervals_end_on_multiples_of_their_length_utc(
    now: datetime, interval: timedelta, end: datetime
) -> None:
    assert interval_end(now, interval) == end


# --- §4.4: the report -----------------------------------------------------------------


def test_the_report_has_rfc_8460_s_fields() -> None:
    tally = counts()
    for _ in range(5):
        tally.success(STS)
    tally.failure(
        STS,
        ResultType.CERTIFICATE_HOST_MISMATCH,
        mx="mx1.example.net",
        address="192.0.2.1",
        reason="certificate is not valid for 'mx1.example.net'",
    )
    tally.failure(
        STS, ResultType.CERTIFICATE_HOST_MISMATCH, mx="mx1.example.net", address="192.0.2.1"
    )
    [report] = tally.take(END)
    identifier = report_id(START, "a1b2", 7, "mx.mailyard.example")
    document = report_document(
        report, organization="Example Inc.", contact="tlsrpt@example.com", report_id=identifier
    )
    assert json.loads(json.dumps(document)) == {
        "organization-name": "Example Inc.",
        "date-range": {
            "start-datetime": "2026-12-01T00:00:00Z",
            "end-datetime": "2026-12-02T00:00:00Z",
        },
        "contact-info": "tlsrpt@example.com",
        "report-id": "20261201T000000Z.a1b2.7@mx.mailyard.example",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1",
                        "mode: enforce",
                        "mx: mx1.example.net",
                        "max_age: 86400",
                    ],
                    "policy-domain": "example.net",
                    "mx-host": ["mx1.example.net"],
                },
                "summary": {
                    "total-successful-session-count": 5,
                    "total-failure-session-count": 2,
                },
                "failure-details": [
                    {
                        "result-type": "certificate-host-mismatch",
                        "sending-mta-ip": "",
                        "receiving-mx-hostname": "mx1.example.net",
                        "receiving-ip": "192.0.2.1",
                        "failed-session-count": 2,
                        "failure-reason-code": "certificate is not valid for 'mx1.example.net'",
                    }
                ],
            }
        ],
    }


def test_a_domain_without_a_policy_and_without_failures_is_reported_briefly() -> None:
    tally = counts()
    tally.success(no_policy("example.com"))
    [report] = tally.take(END)
    document = report_document(report, organization="o", contact="c@example.com", report_id="r@x")
    [entry] = document["policies"]
    assert entry == {
        "policy": {"policy-type": "no-policy-found", "policy-domain": "example.com"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
    }


def test_an_sts_fetch_failure_has_no_mx_and_says_why() -> None:
    tally = counts()
    tally.failure(
        ReportedPolicy(PolicyType.STS, "example.net"),
        ResultType.STS_POLICY_FETCH_ERROR,
        reason="HTTP 404 from https://mta-sts.example.net/.well-known/mta-sts.txt",
    )
    [report] = tally.take(END)
    document = report_document(report, organization="o", contact="c@example.com", report_id="r@x")
    [entry] = document["policies"]
    assert entry["policy"] == {"policy-type": "sts", "policy-domain": "example.net"}
    [detail] = entry["failure-details"]
    assert detail["result-type"] == "sts-policy-fetch-error"
    assert "receiving-mx-hostname" not in detail
    assert detail["failure-reason-code"].startswith("HTTP 404")


def test_report_ids_differ_by_replica_and_sequence_and_are_msg_ids() -> None:
    ids = {report_id(START, replica, n, "mx.example") for replica in ("a1", "b2") for n in (1, 2)}
    assert len(ids) == 4
    for identifier in ids:
        left, at, right = identifier.partition("@")
        assert at
        assert left
        assert right == "mx.example"
        assert "<" not in identifier
