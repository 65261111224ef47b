"""received_header: the Received: trace header, safe against hostile HELO names."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest

from mailyard.ingress.trace import received_header

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def header(*, helo: str = "client.example", recipients: list[str] | None = None) -> bytes:
    return received_header(
        helo=helo,
        client_ip="192.0.2.7",
        hostname="mx.example.com",
        protocol="ESMTPS",
        message_id="01HXYZ",
        recipients=["rcpt@example.net"] if recipients is None else recipients,
        when=WHEN,
    )


def assert_well_formed(raw: bytes) -> None:
    """One header field: CRLF line ends, continuation lines start with a tab."""
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line
        assert b"\n" not in line
        assert line.isascii()
    assert lines[0].startswith(b"Received: ")
    assert all(line.startswith(b"\t") for line in lines[1:])


def comments_balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_structure_with_one_recipient():
    raw = header()
    assert raw == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.example.com (Mailyard) with ESMTPS id 01HXYZ\r\n"
        b"\tfor <rcpt@example.net>;\r\n"
        b"\tMon, 06 May 2024 07:08:09 +0000\r\n"
    )
    assert_well_formed(raw)


@pytest.mark.parametrize("recipients", [[], ["a@example.net", "b@example.net"]])
def test_for_clause_only_with_exactly_one_recipient(recipients):
    raw = header(recipients=recipients)
    assert b"for <" not in raw
    assert b"a@example.net" not in raw
    assert raw == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.example.com (Mailyard) with ESMTPS id 01HXYZ;\r\n"
        b"\tMon, 06 May 2024 07:08:09 +0000\r\n"
    )


def test_parses_as_one_header_with_the_date_after_the_last_semicolon():
    msg = email.message_from_bytes(header() + b"\r\nbody\r\n", policy=email.policy.default)
    assert msg.keys() == ["Received"]
    value = str(msg["Received"])
    assert value.startswith("from client.example ([192.0.2.7])")
    date = value.rpartition(";")[2].strip()
    assert email.utils.parsedate_to_datetime(date) == WHEN


@pytest.mark.parametrize(
    "helo",
    [
        "evil.example\r\nBcc: victim@example.com",
        "evil.example\nX-Injected: yes",
        "evil.example\rX-Injected: yes",
        "a b c",
        "evil (forged) example",
        "evil)",
        "(evil",
        "))((",
        "back\\slash)",
        "h\u00e9llo.example",
        "\u043f\u0440\u0438\u0432\u0435\u0442.example",
        "tab\there",
        "nul\x00byte",
        "del\x7f",
        "x" * 1000,
    ],
)
def test_hostile_helo_cannot_break_the_header(helo):
    raw = header(helo=helo)
    assert_well_formed(raw)
    text = raw.decode("ascii")
    assert comments_balanced(text)
    first_line = text.split("\r\n")[0]
    match = re.fullmatch(r"Received: from (\S+) \(\[192\.0\.2\.7\]\)", first_line)
    assert match is not None, first_line
    assert len(match.group(1)) <= 255
    msg = email.message_from_bytes(raw + b"\r\nbody\r\n", policy=email.policy.default)
    assert msg.keys() == ["Received"]


def test_hostile_helo_characters_are_replaced():
    raw = header(helo="ev il(x)\r\n\u00e9")
    assert raw.startswith(b"Received: from ev?il?x???? ([192.0.2.7])\r\n")


def test_empty_helo_becomes_unknown():
    assert header(helo="").startswith(b"Received: from unknown ([192.0.2.7])\r\n")


def test_hostile_recipient_cannot_break_the_header():
    raw = header(recipients=['"a)b\r\nBcc: x"@example.net'])
    assert_well_formed(raw)
    assert comments_balanced(raw.decode("ascii"))
    assert b'\tfor <"a?b??Bcc:?x"@example.net>;\r\n' in raw
