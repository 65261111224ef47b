"""Everything under tests/chart is marked `chart`: the Helm chart, rendered by the real helm."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/chart/" in str(item.fspath):
            item.add_marker(pytest.mark.chart)
