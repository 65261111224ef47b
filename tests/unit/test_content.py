"""header_block: the header section of stored content, cut on a line boundary."""

from __future__ import annotations

import pytest

from mailyard.content import header_block

HEADERS = b"Received: from a\r\n\tby b\r\nSubject: hi\r\nFrom: s@example.com\r\n"


def test_stops_at_the_body_separator_keeping_the_last_crlf():
    assert header_block(HEADERS + b"\r\nbody line\r\nSubject: not a header\r\n") == HEADERS


def test_empty_body():
    assert header_block(HEADERS + b"\r\n") == HEADERS


def test_without_body_separator_the_whole_content_is_headers():
    assert header_block(HEADERS) == HEADERS


def test_empty_content():
    assert header_block(b"") == b""


def test_under_or_at_the_limit_is_not_cut():
    assert header_block(HEADERS + b"\r\nbody", limit=len(HEADERS)) == HEADERS


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (len(HEADERS) - 1, b"Received: from a\r\n\tby b\r\nSubject: hi\r\n"),
        (
            len(b"Received: from a\r\n\tby b\r\nSubject: hi\r\n"),
            b"Received: from a\r\n\tby b\r\nSubject: hi\r\n",
        ),
        (len(b"Received: from a\r\n\tby b\r\nSubject: hi\r"), b"Received: from a\r\n\tby b\r\n"),
        (20, b"Received: from a\r\n"),
        (18, b"Received: from a\r\n"),
        (17, b""),
        (1, b""),
    ],
)
def test_cut_at_limit_on_a_line_boundary(limit, expected):
    block = header_block(HEADERS + b"\r\nbody\r\n", limit=limit)
    assert block == expected
    assert len(block) <= limit
    assert block == b"" or block.endswith(b"\r\n")


def test_default_limit_is_64_kib():
    line = b"X-Filler: " + b"a" * 88 + b"\r\n"  # 100 bytes
    content = line * 1000 + b"\r\nbody"
    block = header_block(content)
    assert len(block) == 65500
    assert block == line * 655
