"""The ``Received:`` trace header ingress prepends (RFC 5321 §4.4)."""

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


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    message_id: str,
    recipients: list[str],
    when: datetime,
) -> bytes:
    """``Received: from helo ([ip]) by host (Mailyard) with ESMTP id …; date``.

    The recipient is named only when there is exactly one, as Postfix does,
    so that Bcc recipients are not disclosed to each other.
    """
    for_clause = f"\r\n\tfor <{_clean(recipients[0])}>" if len(recipients) == 1 else ""
    return (
        f"Received: from {_clean(helo)} ([{client_ip}])\r\n"
        f"\tby {hostname} (Mailyard) with {protocol} id {message_id}{for_clause};\r\n"
        f"\t{_date(int(when.timestamp()))}\r\n"
    ).encode("ascii", "replace")
