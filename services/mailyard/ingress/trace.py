"""Headers ingress adds: ``Received:`` (RFC 5321 §4.4, RFC 3848), and on
submission the ``Message-ID:`` and ``Date:`` a client left out (RFC 6409 §8)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from email.utils import format_datetime

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\\]")


def _clean(text: str) -> str:
    """HELO names come from the client: no spaces, controls or comment syntax."""
    return _UNSAFE.sub("?", text)[:255] or "unknown"


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    """RFC 5322 date of a whole second; cached, as many messages share one."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def protocol_name(*, extended: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848's "with" values: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not extended:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    message_id: str,
    recipients: list[str],
    when: datetime,
    tls: str = "",
) -> bytes:
    """``Received: from helo ([ip]) (using TLS…) by host (Mailyard) with ESMTPS id …; date``.

    The recipient is named only when there is exactly one, as Postfix does,
    so that Bcc recipients are not disclosed to each other; the user who
    authenticated is not named at all (it is in our logs, not in the mail).
    ``tls`` is the comment on the encryption, e.g. ``TLSv1.3 with cipher
    TLS_AES_256_GCM_SHA384 (256 bits)``.
    """
    for_clause = f"\r\n\tfor <{_clean(recipients[0])}>" if len(recipients) == 1 else ""
    using = f"\r\n\t(using {_comment(tls)})" if tls else ""
    return (
        f"Received: from {_clean(helo)} ([{client_ip}]){using}\r\n"
        f"\tby {hostname} (Mailyard) with {protocol} id {message_id}{for_clause};\r\n"
        f"\t{_date(int(when.timestamp()))}\r\n"
    ).encode("ascii", "replace")


def _comment(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]|[()\\]", "?", text)[:200]


def submission_headers(content: bytes, *, hostname: str, message_id: str, when: datetime) -> bytes:
    """The ``Date:`` and ``Message-ID:`` a submitting client did not write (RFC 6409 §8)."""
    headers = content if content.startswith(b"\r\n") else content.split(b"\r\n\r\n", 1)[0]
    names = {
        line.split(b":", 1)[0].strip().lower()
        for line in headers.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t") and b":" in line
    }
    added = b""
    if b"date" not in names:
        added += f"Date: {_date(int(when.timestamp()))}\r\n".encode()
    if b"message-id" not in names:
        added += f"Message-ID: <{message_id}@{hostname}>\r\n".encode("ascii", "replace")
    return added + content
