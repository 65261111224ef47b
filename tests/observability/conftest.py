"""Everything under tests/observability is marked `observability`."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/observability/" in str(item.fspath):
            item.add_marker(pytest.mark.observability)
