"""The operational artifacts under test: alert rules, dashboards, runbooks."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "mailyard" / "alerts" / "mailyard.rules.yaml"
RULE_TESTS = Path(__file__).resolve().parent / "alerts.test.yaml"
DASHBOARDS = REPO / "charts" / "mailyard" / "dashboards"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/mailyard/mailyard/blob/main/docs/runbooks.md#"

INSTALL_HINT = "apt-get install prometheus (the Debian package has promtool and prometheus)"


def binary(name: str) -> str | None:
    """Path of a Prometheus binary (the Debian package puts them in /usr/bin)."""
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").exists():
        found = f"/usr/bin/{name}"
    return found


def require(name: str) -> str:
    """The binary's path; a skip on a developer's machine without it, a failure in CI."""
    path = binary(name)
    if path is None:
        message = f"{name} is not installed: {INSTALL_HINT}; .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels that show data (rows are headings)."""
    return [p for p in board["panels"] if p["type"] != "row"]


def rows(board: dict[str, Any]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Row title → (the row's heading, the panels under it, up to the next row)."""
    found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    current: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = []
            found[panel["title"]] = (panel, current)
        else:
            current.append(panel)
    return found


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every target of every dashboard."""
    return [
        (name, panel["title"], target["expr"])
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
    ]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOKS.read_text().splitlines()
        if re.match(r"^#{1,6} ", line)
    }
