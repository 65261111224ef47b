"""MTA-STS (RFC 8461), the pure part: the TXT record, the policy file, MX matching.

Fetching (DNS, HTTPS) is in ``mtasts_fetch.py``. Written here by hand: no
well-kept Python library parses MTA-STS policies (the few on PyPI are
unmaintained), and the grammar is a dozen lines of the RFC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: at most one year
MAX_POLICY_BYTES = 64 * 1024  # §3.3: senders may cap the body; 64 KB is generous
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TXT_FIELD = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*=\s*([^;]*?)\s*")


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(ValueError):
    """The policy file is not a valid STSv1 policy; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Policy:
    id: str  # the TXT record's id this policy was fetched for
    mode: Mode
    mx: tuple[str, ...]  # lower-case patterns; "*.example.net" matches one label
    max_age: int

    def matches(self, host: str) -> bool:
        """RFC 8461 §4.1: the MX host name equals a pattern, or a wildcard covers
        exactly its leftmost label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                _, dot, rest = host.partition(".")
                if dot and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def lines(self) -> tuple[str, ...]:
        """The policy as TLSRPT quotes it (RFC 8460 §4.4 ``policy-string``)."""
        mx = tuple(f"mx: {pattern}" for pattern in self.mx)
        return ("version: STSv1", f"mode: {self.mode.value}", *mx, f"max_age: {self.max_age}")


def record_id(strings: list[str]) -> str | None:
    """The id of the one ``v=STSv1`` record among a name's TXT records, or None.

    §3.1: several STSv1 records, or one without a valid id, mean no policy.
    Each record's strings are already joined.
    """
    found: list[str | None] = []
    for text in strings:
        if not text.startswith("v=STSv1"):
            continue
        fields = dict(_fields(text))
        if fields.get("v") != "STSv1":
            continue
        identifier = fields.get("id", "")
        found.append(identifier if _ID.fullmatch(identifier) else None)
    return found[0] if len(found) == 1 else None


def _fields(text: str) -> list[tuple[str, str]]:
    fields = []
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _TXT_FIELD.fullmatch(part)
        if match is not None:
            fields.append((match.group(1), match.group(2)))
    return fields


def parse_policy(text: str, record: str) -> Policy:
    """A policy file (§3.2): ``key: value`` lines, CRLF or LF; unknown keys are ignored."""
    version = mode = max_age = None
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"not a 'key: value' line: {line[:80]!r}")
        key, value = key.strip(), value.strip()
        if key == "version":
            version = value
        elif key == "mode":
            mode = value
        elif key == "max_age":
            max_age = value
        elif key == "mx":
            mx.append(value.lower().rstrip("."))
    if version != "STSv1":
        raise PolicyError(f"version is {version!r}, not 'STSv1'")
    if mode not in {m.value for m in Mode}:
        raise PolicyError(f"mode is {mode!r}, not enforce, testing or none")
    if max_age is None or not max_age.isdigit() or len(max_age) > 10:
        raise PolicyError(f"max_age is {max_age!r}, not a number of seconds")
    if not mx and mode != Mode.NONE:
        raise PolicyError("no mx pattern")
    return Policy(record, Mode(mode), tuple(mx), min(int(max_age), MAX_AGE_LIMIT))
