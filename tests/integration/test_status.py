"""mailyard status reads queue depths and consumers from the real broker."""

from __future__ import annotations

import asyncio

from mailyard.broker import BrokerClient
from mailyard.cli import topology_for
from mailyard.config import load_settings
from mailyard.status import QueueState, read_queues
from tests.support.pipeline import Pipeline, message, wait_until


def test_status_reads_depths_and_consumers(pipeline_factory, monkeypatch) -> None:
    pipeline: Pipeline = pipeline_factory(split=True)
    settings = load_settings(pipeline.config_path)

    def queues() -> dict[str, QueueState]:
        client = BrokerClient(settings.broker, topology_for(settings), service="status")
        return asyncio.run(read_queues(client))

    running = queues()
    assert running["delivery"].consumers == 1
    assert running["inbound"].consumers == 1
    assert running["parking"] == QueueState(0, 0)

    pipeline.processes["delivery"].terminate()
    for index in range(4):
        assert pipeline.send("app@sender.test", [f"s{index}@alpha.test"], message("s"))[0] == 250
    stopped = wait_until(
        lambda: (q := queues())["delivery"].messages == 4 and q, 20, "4 jobs waiting for delivery"
    )
    assert stopped["delivery"].consumers == 0
