"""Looking inside stored message content without parsing all of it."""

from __future__ import annotations

import re


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


def remove_fields(content: bytes, name: bytes) -> tuple[bytes, list[bytes]]:
    """``content`` without the header fields called ``name`` (any case), and their values.

    Each value is unfolded (RFC 5322 §2.2.3) and stripped, in the order the
    fields came. Only the header section is looked at (a message quoted in
    the body keeps its fields); a field's folded lines go with it. Content
    without such a field comes back as the same object.
    """
    headers = header_block(content, None)
    wanted = name.lower()
    if wanted not in headers.lower():
        return content, []  # the common case: one scan, nothing rebuilt
    kept: list[bytes] = []
    values: list[bytes] = []
    dropping = False
    for line in _LINES.findall(headers):
        if line[:1] in (b" ", b"\t"):  # a folded line belongs to the field above
            if dropping:
                values[-1] += line.removesuffix(b"\r\n")
            else:
                kept.append(line)
            continue
        field, colon, value = line.partition(b":")
        dropping = bool(colon) and field.rstrip().lower() == wanted
        if dropping:
            values.append(value.removesuffix(b"\r\n"))
        else:
            kept.append(line)
    return b"".join(kept) + content[len(headers) :], [value.strip() for value in values]


# A line with its CRLF; the last may lack one (content that is all header).
_LINES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
