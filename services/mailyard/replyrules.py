"""The conditions a reply rule may set, shared by the bounce and throttling rules — no I/O.

- ``code``: the reply code, with ``x`` for any digit (``550``, ``55x``, ``4xx``);
- ``status``: the enhanced status code (RFC 3463), ``x`` for any one part
  (``5.1.1``, ``x.1.1``, ``5.7.x``);
- ``text``: a regular expression searched in the reply text, case-insensitive.

All the conditions a rule sets must hold; a rule must set one at least.
Both kinds of rules files have the same shape (``rules:``, a list of
mappings) and are read the same way: :func:`read_rules_files`,
:func:`rule_entries`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailyard.reply import Reply

CONDITIONS = frozenset({"code", "status", "text"})
_CODE_SHAPE = r"[2-5x][0-9x]{2}"
_STATUS_SHAPE = r"[245x]\.(?:\d{1,3}|x)\.(?:\d{1,3}|x)"


@dataclass(frozen=True, slots=True)
class Conditions:
    code: re.Pattern[str] | None = None
    status: re.Pattern[str] | None = None
    text: re.Pattern[str] | None = None

    def match(self, reply: Reply) -> bool:
        if self.code is not None and not self.code.fullmatch(str(reply.code)):
            return False
        if self.status is not None and not self.status.fullmatch(reply.status):
            return False
        return self.text is None or self.text.search(reply.text) is not None


def reply_conditions(
    entry: Mapping[str, Any], where: str, error: type[Exception]
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None, re.Pattern[str] | None]:
    """``code``, ``status`` and ``text`` of one rule, compiled; ``error`` names ``where``."""
    if not CONDITIONS & set(entry):
        raise error(f"{where}: a rule needs code, status or text")
    return (
        _digits(entry.get("code"), _CODE_SHAPE, where, "code", error),
        _digits(entry.get("status"), _STATUS_SHAPE, where, "status", error),
        _regex(entry.get("text"), where, error),
    )


def _digits(
    value: Any, shape: str, where: str, key: str, error: type[Exception]
) -> re.Pattern[str] | None:
    if value is None:
        return None
    value = str(value).lower()
    if not re.fullmatch(shape, value):
        raise error(f"{where}: {key} {value!r} is not like {shape}")
    pattern = r"\.".join(
        r"\d+" if part == "x" else re.escape(part).replace("x", r"\d") for part in value.split(".")
    )
    return re.compile(pattern)


def _regex(value: Any, where: str, error: type[Exception]) -> re.Pattern[str] | None:
    if value is None:
        return None
    try:
        return re.compile(str(value), re.IGNORECASE)
    except re.error as exc:
        raise error(f"{where}: text is not a regular expression: {exc}") from exc


def read_rules_files(
    files: Sequence[Path], key: str, error: type[Exception]
) -> list[tuple[str, str]]:
    """The text of each of ``key``'s files, in order, with the source to name it by
    (``key[i]: path``); ``error`` names the file that cannot be read."""
    texts = []
    for index, path in enumerate(files):
        source = f"{key}[{index}]: {path}"
        try:
            texts.append((path.read_text(), source))
        except OSError as exc:
            raise error(f"{source}: {exc.strerror or exc}") from exc
    return texts


def rule_entries(
    text: str, source: str, error: type[Exception]
) -> list[tuple[dict[str, Any], str]]:
    """Each rule of one file (``rules:``, a list of mappings) with where it stands
    (``source: rule N``), for its kind to read; ``error`` for a file of another shape."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise error(f"{source}: expected a mapping with a 'rules' list")
    entries = []
    for index, entry in enumerate(document["rules"]):
        where = f"{source}: rule {index + 1}"
        if not isinstance(entry, dict):
            raise error(f"{where}: expected a mapping, got {entry!r}")
        entries.append((entry, where))
    return entries
