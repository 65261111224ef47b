"""`make bench` works: a small run end to end, Mailyard and (as root) Postfix side by side.

This checks the harness, not the speed: speed is for `make bench` on a quiet
machine, never for a test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def postfix_available() -> bool:
    """The comparison needs Postfix and root (its queue directories are chowned)."""
    installed = shutil.which("postfix") or Path("/usr/sbin/postfix").exists()
    if not installed and os.environ.get("CI"):
        pytest.fail("postfix is not installed; .ci/run installs it")
    return bool(installed) and os.geteuid() == 0


def test_a_small_benchmark_runs_and_loses_nothing(broker: str, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable, "-m", "bench", "--count", "300", "--rounds", "1",
        "--modes", "split,embedded",
        "--latency-seconds", "2", "--results", str(results),
    ]  # fmt: skip
    compare = postfix_available()
    if compare:
        command.append("--compare-postfix")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{REPO}"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "delivered msg/s (end to end)" in done.stdout

    lines = [json.loads(line) for line in results.read_text().splitlines()]
    systems = {line["system"]: line for line in lines}
    mailyards = {"mailyard-split", "mailyard-embedded"}
    assert set(systems) == (mailyards | {"postfix"} if compare else mailyards)
    for name, result in systems.items():
        assert result["count"] == 300, name
        assert (result["lost"], result["duplicated"], result["latency_lost"]) == (0, 0, 0), name
        assert result["delivered_per_s"] > 0, name
        assert set(result["latency_ms"]) == {"p50", "p95", "p99"}, name
        assert all(seconds >= 0 for seconds in result["cpu_per_1000"].values()), result
        # The submission phase: STARTTLS + AUTH PLAIN, 10 messages a session.
        assert result["submission_per_s"] > 0, name
        assert result["submission_delivered_per_s"] > 0, name
        assert result["submission_cpu_per_1000"] > 0, name
    mailyard = systems["mailyard-split"]
    assert set(mailyard["cpu_per_1000"]) == {"ingress", "queue", "delivery", "bounce"}
    assert mailyard["rabbitmq_cpu_per_1000"] > 0
    embedded = systems["mailyard-embedded"]
    assert set(embedded["cpu_per_1000"]) == {"all"}
    assert embedded["rabbitmq_cpu_per_1000"] == 0
    if compare:
        assert systems["postfix"]["cpu_per_1000"]["total"] > 0


def test_a_small_signing_benchmark_checks_its_signatures(broker: str, tmp_path: Path) -> None:
    """--dkim: Mailyard signs with each key type, Postfix through OpenDKIM; every
    latency-phase message arrives signed, and a sample's signatures verify."""
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable, "-m", "bench", "--count", "200", "--rounds", "1",
        "--modes", "embedded", "--dkim", "rsa,ed25519", "--submission-count", "0",
        "--latency-seconds", "2", "--results", str(results),
    ]  # fmt: skip
    opendkim = shutil.which("opendkim") or Path("/usr/sbin/opendkim").exists()
    if os.environ.get("CI") and not opendkim:
        pytest.fail("opendkim is not installed; .ci/run installs it")
    compare = postfix_available() and bool(opendkim)
    if compare:
        command.append("--compare-postfix")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{REPO}"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "DKIM: signed (latency phase), verified" in done.stdout

    systems = {r["system"]: r for r in map(json.loads, results.read_text().splitlines())}
    signing = {"mailyard-embedded-dkim-rsa", "mailyard-embedded-dkim-ed25519"}
    if compare:
        signing |= {"postfix-opendkim-rsa", "postfix-opendkim-ed25519"}
        assert systems["postfix-opendkim-rsa"]["cpu_per_1000"]["opendkim"] > 0
    assert signing <= set(systems)
    for name in signing:
        assert systems[name]["dkim_verified"] is True, name
        assert systems[name]["dkim_signed"] >= 200, name  # every latency message
        assert systems[name]["latency_lost"] == 0, name
    assert systems["mailyard-embedded"]["dkim_verified"] is None
    assert systems["mailyard-embedded"]["dkim_signed"] == 0


def test_the_stage_benchmark_runs_each_service_alone(broker: str, tmp_path: Path) -> None:
    """`make bench-stages`: ingress, then queue, then delivery, each draining what
    the one before left; all of it arrives, once."""
    if not (shutil.which("smtp-source") or Path("/usr/sbin/smtp-source").exists()):
        if os.environ.get("CI"):
            pytest.fail("smtp-source is not installed; .ci/run installs postfix")
        pytest.skip("smtp-source not installed (apt-get install postfix)")
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable, "-m", "bench.stages", "--count", "3000", "--rounds", "1",
        "--results", str(results),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{REPO}"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "delivery: CPU ms/msg" in done.stdout

    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (row["kind"], row["system"], row["count"]) == ("stages", "mailyard-split", 3000)
    assert set(row["stages"]) == {"ingress", "queue", "delivery"}
    for name, stage in row["stages"].items():
        assert stage["cpu_ms"] > 0, name
        assert stage["per_s"] > 0, name
    assert row["rounds"][0]["delivery"]["duplicated"] == 0
