"""Run the real helm on charts/mailyard and parse what it renders."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mailyard"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "mail"
RELEASE = "mx"
# The Kubernetes version templates see; also the one the schemas are checked for.
KUBE_VERSION = "1.37.0"
# What a cluster with KEDA, the Prometheus Operator and the RabbitMQ Cluster Operator reports.
API_VERSIONS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1", "rabbitmq.com/v1beta1")
INSTALL_HINT = (
    "helm is not installed: `GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0` "
    "(.ci/run does it)"
)

Document = dict[str, Any]


@functools.cache
def helm_binary() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidate = Path(gopath) / "bin" / "helm"
    return str(candidate) if candidate.exists() else None


def require_helm() -> str:
    path = helm_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_helm(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template_args(
    values_files: tuple[Path, ...],
    settings: tuple[str, ...],
    api_versions: tuple[str, ...],
    schema: bool = True,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if not schema:
        args.append("--skip-schema-validation")
    args += ["--kube-version", KUBE_VERSION]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    for path in values_files:
        args += ["--values", str(path)]
    for setting in settings:
        args += ["--set", setting]
    return args


@functools.cache
def _render(
    values_files: tuple[Path, ...],
    settings: tuple[str, ...],
    api_versions: tuple[str, ...],
    schema: bool,
) -> tuple[Document, ...]:
    result = run_helm(*template_args(values_files, settings, api_versions, schema))
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


class RenderError(Exception):
    """helm template failed; the message is helm's."""


def render(
    *values_files: Path | str,
    settings: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = API_VERSIONS,
    schema: bool = True,
) -> list[Document]:
    """Every object `helm template` renders (cached: treat them as read-only).

    ``schema=False`` skips values.schema.json; only for keys it does not know yet
    (see :func:`config_schema_has`).
    """
    files = tuple(CHART / "ci" / f if isinstance(f, str) else f for f in values_files)
    return list(_render(files, settings, api_versions, schema))


def config_schema_has(path: str) -> bool:
    """Whether the schema of ``config`` (the app's own model) has the dotted key yet.

    The config keys of issue 11 come from its other parts (queue.classes,
    delivery.shaping, delivery.source_addresses, ...). Until the model has one,
    a test that sets it renders without the schema, which the model would refuse;
    from then on, with it.
    """
    schema = json.loads((CHART / "values.schema.json").read_text())
    definitions = schema["$defs"]
    node: dict[str, Any] = definitions["Settings"]
    for part in path.split("."):
        while "$ref" in node or "anyOf" in node:
            if "$ref" in node:
                node = definitions[node["$ref"].rsplit("/", 1)[1]]
            else:
                node = next((n for n in node["anyOf"] if n.get("type") != "null"), {})
        if part not in node.get("properties", {}):
            return False
        node = node["properties"][part]
    return True


def render_error(*values_files: Path | str, settings: tuple[str, ...] = ()) -> str:
    """helm's error message for values that must not render."""
    try:
        render(*values_files, settings=settings)
    except RenderError as exc:
        return str(exc)
    raise AssertionError("the chart rendered values it should have refused")


def find(docs: list[Document], kind: str, name: str | None = None) -> list[Document]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Document], kind: str, name: str | None = None) -> Document:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def component(doc: Document) -> str:
    return str(doc["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def pod_specs(docs: list[Document]) -> list[tuple[str, Document]]:
    """(kind/name, pod spec) of every Deployment and bare Pod."""
    found = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            found.append((f"Deployment/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Pod":
            found.append((f"Pod/{doc['metadata']['name']}", doc["spec"]))
    return found
