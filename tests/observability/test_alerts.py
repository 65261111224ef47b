"""The alert rules pass promtool (syntax and unit tests) and follow the conventions."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.observability.artifacts import (
    RULE_TESTS,
    RULES,
    RUNBOOK_BASE,
    alert_rules,
    require,
    runbook_anchors,
)

# A service, or shared plumbing that several services have: the parking queue, the
# watched files (filewatch.py: certificates and users files today, DKIM keys later).
NAME = re.compile(
    r"^Mailyard(Ingress|Queue|Delivery|Bounce|Parking|File|Suppression)[A-Z][A-Za-z]+$"
)
SEVERITIES = {"critical", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool")


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_follow_the_conventions() -> None:
    anchors = runbook_anchors()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alert_rules():
        name = rule["alert"]
        assert NAME.match(name), f"{name}: not Mailyard<Component><Symptom>"
        assert rule.get("for"), f"{name}: needs a `for:`"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "{{" in annotations["description"], f"{name}: the description is not templated"
        url = annotations["runbook_url"]
        assert url == RUNBOOK_BASE + name.lower(), f"{name}: runbook_url {url}"
        assert name.lower() in anchors, f"{name}: no section `## {name}` in docs/runbooks.md"


def test_the_issue_s_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "MailyardQueueBacklogGrowing",
        "MailyardDeliveryFailureRatioHigh",
        "MailyardDeliveryDeferralRatioHigh",
        "MailyardParkingQueueNotEmpty",
        "MailyardIngressBrokerUnavailable",
        "MailyardQueueNoConsumers",
        "MailyardIngressDown",
        "MailyardQueueDown",
        "MailyardDeliveryDown",
        "MailyardBounceDown",
        "MailyardIngressAuthFailureStorm",
        "MailyardIngressCertificateExpiringSoon",
        "MailyardIngressCertificateExpiryImminent",
        "MailyardFileReloadFailing",
    }


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no firing case"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no quiet case"
