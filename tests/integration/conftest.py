from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns_server import TestDnsServer
from tests.support.pipeline import Pipeline, start_pipeline, stop_pipeline

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def pipeline_factory(
    broker: str, dns_server: TestDnsServer, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    started: list[tuple[Pipeline, list[str]]] = []

    def start(**options: Any) -> Pipeline:
        pipeline = start_pipeline(tmp_path, dns_server, **options)
        delays = (options.get("overrides") or {}).get("queue", {}).get("retry_delays", ["1s"])
        started.append((pipeline, delays))
        return pipeline

    yield start
    for pipeline, delays in started:
        stop_pipeline(pipeline, delays)


@pytest.fixture
def pipeline(pipeline_factory: Callable[..., Pipeline]) -> Pipeline:
    return pipeline_factory()
