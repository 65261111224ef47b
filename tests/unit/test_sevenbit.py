"""8-bit and long-lined bodies made 7-bit for the wire, checked on the bytes that come out."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from email.policy import default

import pytest

from mailyard.sevenbit import LINE_LIMIT, convert, has_long_line, needs_conversion

HEADERS = b"From: a@sender.test\r\nTo: b@alpha.test\r\nSubject: s\r\n"
MULTIPART = (
    HEADERS + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"preamble\r\n--B\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"caf\xc3\xa9 \xe2\x98\x83 with a trailing space \r\n.a dot line\r\n"
    b"--B\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>ascii</p>\r\n"
    b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"\x00\x01\xfe\xff binary\r\n"
    b"--B--\r\nepilogue\r\n"
)


def parts(content: bytes) -> list[Message]:
    return [p for p in message_from_bytes(content, policy=default).walk() if not p.is_multipart()]


def lines_fit(content: bytes) -> bool:
    return content.isascii() and all(len(line) <= LINE_LIMIT for line in content.split(b"\r\n"))


def test_each_part_reads_the_same_after_conversion() -> None:
    converted = convert(MULTIPART)
    assert lines_fit(converted)
    assert b"\n" not in converted.replace(b"\r\n", b"")  # CRLF only
    before, after = parts(MULTIPART), parts(converted)
    assert [p.get_payload(decode=True) for p in after] == [
        p.get_payload(decode=True) for p in before
    ]
    assert [p["Content-Transfer-Encoding"] for p in after] == ["quoted-printable", None, "base64"]


def test_a_part_that_is_7_bit_already_is_left_as_it_was() -> None:
    html = b"--B\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>ascii</p>\r\n"
    assert html in convert(MULTIPART)
    assert b"preamble\r\n" in convert(MULTIPART)


def test_text_keeps_its_trailing_space_and_dots() -> None:
    text = parts(convert(MULTIPART))[0]
    # The CRLF before the boundary belongs to the boundary (RFC 2046 §5.1.1).
    assert text.get_content() == "caf\u00e9 \u2603 with a trailing space \r\n.a dot line"


def test_content_that_needs_nothing_is_returned_unchanged() -> None:
    seven = HEADERS + b"\r\nplain ascii\r\n"
    assert convert(seven) is seven
    encoded = (
        HEADERS + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nY2Fmw6k=\r\n"
    )
    assert convert(encoded) is encoded


def test_a_message_without_mime_is_labelled_with_what_its_bytes_are() -> None:
    utf8 = convert(HEADERS + b"\r\nna\xc3\xafve\r\n")
    assert b"MIME-Version: 1.0\r\n" in utf8
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in utf8
    assert utf8.endswith(b"\r\n\r\nna=C3=AFve\r\n")
    latin = convert(HEADERS + b"\r\nlatin \xe9\r\n")
    assert b"charset=unknown-8bit" in latin


def test_long_lines_are_wrapped_with_soft_breaks() -> None:
    long_line = HEADERS + b"\r\n" + b"x" * 3000 + b"\r\nshort\r\n"
    converted = convert(long_line)
    assert lines_fit(converted)
    assert b"charset=us-ascii" in converted
    (text,) = parts(converted)
    assert text.get_payload(decode=True) == b"x" * 3000 + b"\r\nshort\r\n"


def test_a_forwarded_message_is_converted_inside_and_labelled_7bit() -> None:
    inner = (
        b"From: c@x.test\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
    )
    outer = (
        HEADERS + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + inner
        + b"--B--\r\n"
    )
    converted = convert(outer)
    assert lines_fit(converted)
    assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n" in converted
    assert b"=C3=A9t=C3=A9" in converted


@pytest.mark.parametrize(
    ("content", "eight_bit_ok", "expected"),
    [
        (HEADERS + b"\r\nascii\r\n", False, False),
        (HEADERS + b"\r\ncaf\xc3\xa9\r\n", False, True),
        (HEADERS + b"\r\ncaf\xc3\xa9\r\n", True, False),
        (HEADERS + b"\r\n" + b"y" * 999 + b"\r\n", True, True),
        (HEADERS + b"\r\n" + b"y" * 998 + b"\r\n", True, False),
        # 8-bit only in a header: converting the body cannot help (that is SMTPUTF8's matter)
        (b"Subject: caf\xc3\xa9\r\n\r\nascii\r\n", False, False),
    ],
)
def test_needs_conversion(content: bytes, eight_bit_ok: bool, expected: bool) -> None:
    assert needs_conversion(content, eight_bit_ok=eight_bit_ok) is expected


def test_has_long_line_counts_octets_without_the_line_end() -> None:
    assert not has_long_line(b"a" * 998 + b"\r\n" + b"b" * 10)
    assert has_long_line(b"a" * 10 + b"\r\n" + b"b" * 999)
