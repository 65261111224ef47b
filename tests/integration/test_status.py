"""mailyard status reads queue depths and consumers: from RabbitMQ, or from the spool."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from mailyard.broker import QueueState
from mailyard.config import load_settings
from mailyard.status import read_queues
from tests.support.pipeline import Pipeline, message, wait_until
from tests.support.processes import REPO


@pytest.mark.adapters("rabbitmq")
def test_status_reads_depths_and_consumers(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(split=True)
    settings = load_settings(pipeline.config_path)

    def queues() -> dict[str, QueueState]:
        return asyncio.run(read_queues(settings))

    # Ready means each process answers on /metrics; its consumers may reach
    # the broker a moment later.
    running = wait_until(
        lambda: (
            (q := queues())["delivery"].consumers
            and q["delivery.bulk"].consumers
            and q["inbound"].consumers
            and q
        ),
        10,
        "every consumer to be registered",
    )
    assert running["delivery"].consumers == 1
    assert running["delivery.bulk"].consumers == 1  # every lane
    assert running["inbound"].consumers == 1
    assert running["parking"] == QueueState(0, 0)
    assert "retry.1s.bulk" in running

    pipeline.processes["delivery"].terminate()
    for index in range(4):
        assert pipeline.send("app@sender.test", [f"s{index}@alpha.test"], message("s"))[0] == 250
    bulk = b"X-Mailyard-Class: bulk\r\n" + message("b")
    assert pipeline.send("app@sender.test", ["b@alpha.test"], bulk)[0] == 250
    stopped = wait_until(
        lambda: (
            (q := queues())["delivery"].messages == 4 and q["delivery.bulk"].messages == 1 and q
        ),
        20,
        "4 transactional jobs and a bulk one waiting for delivery",
    )
    assert stopped["delivery"].consumers == 0


def _status(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailyard", "status", "--config", str(pipeline.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.adapters("embedded")
def test_status_of_the_embedded_spool_reads_the_file(pipeline: Pipeline) -> None:
    pipeline.sink.script.rcpt_always["later@alpha.test"] = "451 4.7.1 Try again later"
    pipeline.sink.script.rcpt_always["other@alpha.test"] = "451 4.7.1 Try again later"
    for recipient in ("later@alpha.test", "other@alpha.test"):
        assert pipeline.send("app@sender.test", [recipient], message("waits"))[0] == 250
    wait_until(
        lambda: "retry.1s" in _status(pipeline).stdout or pipeline.sink.rcpt_attempts, 20, "work"
    )
    result = _status(pipeline)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mailyard all is running" in result.stdout
    assert result.stdout.splitlines()[1].split() == ["QUEUE", "MESSAGES"]
    assert "parking" in result.stdout

    pipeline.process("all").terminate()
    stopped = _status(pipeline)
    assert stopped.returncode == 0
    assert "mailyard all is not running" in stopped.stdout
    # Stopped mid-retry: the two jobs are still in the spool, on the ladder or in line.
    counts = {line.split()[0]: int(line.split()[1]) for line in stopped.stdout.splitlines()[2:]}
    assert counts.get("retry.1s", 0) + counts["delivery"] + counts["deferred"] == 2
