"""values.schema.json is generated and fresh; values.yaml is documented where it stands."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import yaml

from tests.chart.helm import CHART, REPO

GENERATOR = REPO / "charts" / "values_schema.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("values_schema", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_schema_is_fresh() -> None:
    committed = (CHART / "values.schema.json").read_text()
    assert committed == generator().render(), (
        "charts/mailyard/values.schema.json is stale: run `make chart-schema`"
    )


def leaves(values: Any, path: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [
            leaf
            for key, child in values.items()
            for leaf in leaves(child, f"{path}.{key}" if path else key)
        ]
    return [path]


def test_every_value_is_documented() -> None:
    documented = set(generator().descriptions())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for leaf in leaves(values):
        parts = leaf.split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{leaf}: no `## @param` for it or a parent"
    for name in documented:
        node: Any = values
        for part in name.split("."):
            assert isinstance(node, dict), f"@param {name}: no such value"
            assert part in node, f"@param {name}: no such value"
            node = node[part]
