"""CustomResourceDefinitions of the operators the chart targets, as JSON schemas.

They come from the operators' own Go modules, pinned, through the Go module
proxy (`go mod download`, which verifies them against the checksum database
and keeps them in the module cache, so each is downloaded once):

- PodMonitor, PrometheusRule: prometheus-operator's
  example/prometheus-operator-crd/.
- ScaledObject, TriggerAuthentication: KEDA's config/crd/bases/.

The RabbitMQ Cluster Operator (RabbitmqCluster) is not served by the module
proxy this project can reach (github.com/rabbitmq/cluster-operator/v2 answers
"403 not available" for every version), so RabbitmqCluster objects are checked
by tests/chart/test_rendered.py field by field instead, not against the CRD.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

Schema = dict[str, Any]


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    crd_files: tuple[str, ...]


PROMETHEUS_OPERATOR = Module(
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    tuple(
        f"example/prometheus-operator-crd/monitoring.coreos.com_{name}.yaml"
        for name in ("podmonitors", "prometheusrules")
    ),
)
KEDA = Module(
    "github.com/kedacore/keda/v2",
    "v2.21.0",
    tuple(
        f"config/crd/bases/keda.sh_{name}.yaml"
        for name in ("scaledobjects", "triggerauthentications")
    ),
)
MODULES = (PROMETHEUS_OPERATOR, KEDA)


class Unavailable(Exception):
    """A module could not be downloaded; the message says why."""


def _go() -> str | None:
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").exists():
        found = "/usr/local/go/bin/go"
    return found


@functools.cache
def module_dir(module: Module) -> Path:
    """The module's files, from the module cache (downloaded the first time)."""
    go = _go()
    if go is None:
        raise Unavailable("the go command is not installed")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    # Outside any module, so that no go.mod around us is consulted or changed.
    with tempfile.TemporaryDirectory() as outside:
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{module.path}@{module.version}"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise Unavailable(f"{module.path}@{module.version}: {result.stderr.strip()}") from None
    if "Error" in info or result.returncode != 0:
        raise Unavailable(info.get("Error") or result.stderr.strip())
    return Path(info["Dir"])


def require_module(module: Module) -> Path:
    try:
        return module_dir(module)
    except Unavailable as exc:
        message = f"cannot download the CRDs of {module.path}@{module.version}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) → strict JSON schema, for every CRD of every module."""
    schemas: dict[tuple[str, str], Schema] = {}
    for module in MODULES:
        root = require_module(module)
        for name in module.crd_files:
            crd = yaml.safe_load((root / name).read_text())
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(openapi: Schema) -> Schema:
    """An OpenAPI v3 CRD schema as JSON schema where unknown fields are errors.

    The API server prunes unknown fields, or refuses them under strict field
    validation (kubectl's default); either way a field the CRD does not know is
    a bug in the chart. `nullable` becomes a "null" type.
    """

    def visit(node: Any) -> Any:
        if isinstance(node, list):
            return [visit(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: visit(value) for key, value in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node

    schema: Schema = visit(copy.deepcopy(openapi))
    return schema
