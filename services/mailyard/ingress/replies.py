"""Replies as they go on the wire: the enhanced status code aiosmtpd leaves out.

aiosmtpd's own fixed replies ("552 Error: Too much mail data", "503 Error:
need MAIL command", …) carry no RFC 3463 enhanced status code, although we
advertise ENHANCEDSTATUSCODES (RFC 2034); :func:`with_enhanced_code` adds the
right one and leaves every other line alone.
"""

from __future__ import annotations

import re

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")

# Enhanced codes for aiosmtpd's own replies: by exact text, then by code.
_BY_TEXT = {"250 OK": "2.0.0", "221 Bye": "2.0.0"}
_BY_CODE = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
    "421": "4.7.0",
    "454": "4.7.0",
}

TOO_MANY_SESSIONS = b"421 4.7.0 Too many connections, try again later\r\n"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"


def with_enhanced_code(line: str) -> str:
    """Add the enhanced status code aiosmtpd left out; leave every other line alone."""
    if line in _BY_TEXT:
        return f"{line[:3]} {_BY_TEXT[line]}{line[3:]}"
    if _HAS_ENHANCED.match(line) or len(line) < 4 or line[3] != " ":
        return line
    status = _BY_CODE.get(line[:3])
    return f"{line[:3]} {status}{line[3:]}" if status else line
