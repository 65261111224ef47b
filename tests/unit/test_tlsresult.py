"""RFC 8460 result types named from what failed, and the policy as a report quotes it."""

from __future__ import annotations

import ssl

import pytest

from mailyard.delivery.mtasts import Mode, Policy
from mailyard.delivery.tlsresult import ResultType, certificate_result


def verify_error(code: int) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = code
    return error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (62, ResultType.CERTIFICATE_HOST_MISMATCH),
        (10, ResultType.CERTIFICATE_EXPIRED),
        (18, ResultType.CERTIFICATE_NOT_TRUSTED),  # self-signed leaf
        (20, ResultType.CERTIFICATE_NOT_TRUSTED),  # unknown issuer
        (7, ResultType.VALIDATION_FAILURE),  # bad signature: nothing more precise fits
    ],
)
def test_certificate_failures_get_the_rfc_name(code: int, expected: ResultType) -> None:
    assert certificate_result(verify_error(code)) is expected


def test_a_handshake_that_broke_for_another_reason_is_a_validation_failure() -> None:
    assert certificate_result(ssl.SSLError(1, "wrong version number")) is (
        ResultType.VALIDATION_FAILURE
    )


def test_an_sts_policy_is_quoted_line_by_line() -> None:
    policy = Policy("20261201", Mode.ENFORCE, ("mx1.example.com", "*.example.net"), 86400)
    assert policy.lines() == (
        "version: STSv1",
        "mode: enforce",
        "mx: mx1.example.com",
        "mx: *.example.net",
        "max_age: 86400",
    )
