from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support.dns_server import TestDnsServer
from tests.support.pipeline import ADAPTERS, Pipeline, start_pipeline, stop_pipeline

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every pipeline scenario runs on both adapters, unless it is about RabbitMQ itself."""
    if "adapter" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("adapters")
        adapters = only.args if only else ADAPTERS
        metafunc.parametrize("adapter", adapters, indirect=True)


@pytest.fixture
def adapter(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbitmq":
        request.getfixturevalue("broker")  # skips, or fails under CI, without RabbitMQ
    return str(request.param)


@pytest.fixture
def pipeline_factory(
    adapter: str, dns_server: TestDnsServer, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    started: list[Pipeline] = []

    def start(**options: Any) -> Pipeline:
        options.setdefault("adapter", adapter)
        pipeline = start_pipeline(tmp_path, dns_server, **options)
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        stop_pipeline(pipeline)


@pytest.fixture
def pipeline(pipeline_factory: Callable[..., Pipeline]) -> Pipeline:
    return pipeline_factory()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """The CA whose certificates the test sinks and policy servers present."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """``ca``'s certificate as a PEM file, for ``delivery.tls_ca_file``."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path
