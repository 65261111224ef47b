"""Looking inside stored message content without parsing all of it."""

from __future__ import annotations


def header_block(content: bytes, limit: int | None = 65536) -> bytes:
    """The header section (up to and including its last CRLF), cut at ``limit`` bytes.

    A DSN quotes these (RFC 3462 text/rfc822-headers); a cut never splits a
    header line in two.
    """
    if content.startswith(b"\r\n"):
        return b""  # an empty header section: everything is body
    end = content.find(b"\r\n\r\n")
    headers = content if end < 0 else content[: end + 2]
    if limit is None or len(headers) <= limit:
        return headers
    cut = headers.rfind(b"\r\n", 0, limit)
    return headers[: cut + 2] if cut >= 0 else b""


def body_of(content: bytes) -> bytes:
    """What follows the header section and its empty line (``b""`` if there is none)."""
    if content.startswith(b"\r\n"):
        return content[2:]  # an empty header section: everything is body
    end = content.find(b"\r\n\r\n")
    return b"" if end < 0 else content[end + 4 :]
