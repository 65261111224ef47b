"""Shared fixtures. Integration tests need a real RabbitMQ (see README)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from tests.support.broker import BROKER_URL, reachable
from tests.support.dns_server import TEST_ZONE, TestDnsServer


@pytest.fixture(scope="session")
def broker() -> str:
    """The RabbitMQ the tests use: skipped when there is none, except under CI."""
    problem = reachable()
    if problem is not None:
        message = (
            f"RabbitMQ is not reachable at {BROKER_URL}: install rabbitmq-server and start it "
            "(rabbitmq-server -detached), or set MAILYARD_TEST_BROKER_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message} ({problem}); CI requires it", pytrace=False)
        pytest.skip(message)
    return BROKER_URL


@pytest.fixture(scope="session")
def dns_server() -> Iterator[TestDnsServer]:
    server = TestDnsServer(TEST_ZONE).start()
    server.fail("servfail.test.")
    server.ignore("timeout.test.")
    yield server
    server.stop()
