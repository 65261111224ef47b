"""SMTP replies as values: code, enhanced status code (RFC 3463) and text."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")
        if self.status and not _ENHANCED.match(self.status):
            raise ValueError(f"not an enhanced status code: {self.status!r}")
        if self.status and self.status[0] != str(self.code)[0]:
            raise ValueError(f"status {self.status} does not match reply code {self.code}")

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    @property
    def status_class(self) -> str:
        """``"2xx"``, ``"4xx"`` or ``"5xx"``: a bounded label for metrics."""
        return f"{self.code // 100}xx"

    def render(self) -> str:
        """The reply line as sent on the wire (without CRLF)."""
        lines = self.text.splitlines() or [""]
        status = f"{self.status} " if self.status else ""
        head = [f"{self.code}-{status}{line}" for line in lines[:-1]]
        return "\r\n".join([*head, f"{self.code} {status}{lines[-1]}"])

    def __str__(self) -> str:
        return (
            f"{self.code} {self.status} {self.text}" if self.status else f"{self.code} {self.text}"
        )

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """Build a Reply from a remote server's code and text.

        The enhanced status code is taken from the start of the text when the
        server sent one (and its class matches the code); otherwise it is
        left empty rather than invented.
        """
        text = " ".join(line.strip() for line in message.splitlines()) if message else ""
        first, _, rest = text.partition(" ")
        match = _ENHANCED.match(first)
        if match and int(match.group(1)) == code // 100:
            return cls(code, first, rest)
        return cls(code, "", text)
