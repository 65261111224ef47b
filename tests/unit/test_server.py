"""with_enhanced_code: RFC 3463 codes for aiosmtpd's own bare replies."""

from __future__ import annotations

import pytest

from mailyard.ingress.replies import with_enhanced_code


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        (
            '500 Error: command "FOO" not recognized',
            '500 5.5.2 Error: command "FOO" not recognized',
        ),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("502 Command not implemented", "502 5.5.1 Command not implemented"),
        ("504 Unrecognized authentication type", "504 5.5.4 Unrecognized authentication type"),
        ("530 Authentication required", "530 5.7.0 Authentication required"),
        ("553 Bad address", "553 5.1.3 Bad address"),
        ("554 Transaction failed", "554 5.7.0 Transaction failed"),
        (
            "555 MAIL FROM parameters not recognized",
            "555 5.5.4 MAIL FROM parameters not recognized",
        ),
        ("421 Service not available", "421 4.7.0 Service not available"),
        ("454 TLS not available", "454 4.7.0 TLS not available"),
    ],
)
def test_adds_enhanced_code_to_bare_replies(line, expected):
    assert with_enhanced_code(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        # already carry one
        "250 2.0.0 OK",
        "552 5.3.4 Error: Too much mail data",
        "554 5.7.1 <a@b.example>: Relay access denied",
        "451 4.3.0 Mail system temporarily unavailable, try again later",
        "530 5.7.0 Authentication required",
        "250 2.1.5",
        # EHLO continuation lines and the last EHLO line
        "250-SIZE 100",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250 HELP",
        # replies that get no enhanced code (RFC 2034: not for 220/354)
        "220 mx.example.com ESMTP Mailyard",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 Ok",  # not aiosmtpd's exact text, not ours to guess
        "334 VXNlcm5hbWU6",
        # continuation lines of multi-line replies, even for codes we know
        "554-first line of two",
        "421-mx.example.com closing",
        # too short to be a reply with text
        "250",
        "421",
        "",
    ],
)
def test_leaves_other_lines_alone(line):
    assert with_enhanced_code(line) == line


def test_is_idempotent():
    once = with_enhanced_code("552 Error: Too much mail data")
    assert with_enhanced_code(once) == once
