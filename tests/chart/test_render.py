"""Every ci/*-values.yaml scenario lints, renders, and renders only valid objects.

Valid means: core objects match the Kubernetes OpenAPI schemas of the pinned
versions (kubernetes-validate, strict: an unknown field is an error), and
custom resources match their operators' CRD schemas (tests/chart/crds.py).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.crds import crd_schemas
from tests.chart.helm import CHART, CI_VALUES, KUBE_VERSION, Document, render, run_helm

# The newest Kubernetes whose schemas kubernetes-validate bundles, and the
# oldest one the chart supports (the README says so).
KUBERNETES_VERSIONS = (KUBE_VERSION.rsplit(".", 1)[0], "1.25")
# Custom resources that no CRD schema checks: see crds.py.
NOT_IN_A_FETCHABLE_MODULE = {("rabbitmq.com/v1beta1", "RabbitmqCluster")}

scenarios = pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])


def is_custom(doc: Document) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


@scenarios
def test_helm_lint_strict(values: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "--values", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@scenarios
def test_every_resource_matches_the_kubernetes_schemas(values: Path) -> None:
    checked = 0
    for doc in render(values):
        if is_custom(doc):
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(part) for part in exc.absolute_path)
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): "
                    f"{where}: {exc.message}"
                )
        checked += 1
    assert checked >= 10


@scenarios
def test_every_custom_resource_matches_its_crd(values: Path) -> None:
    for doc in render(values):
        if not is_custom(doc):
            continue
        key = (doc["apiVersion"], doc["kind"])
        if key in NOT_IN_A_FETCHABLE_MODULE:
            continue
        schema = crd_schemas().get(key)
        assert schema is not None, f"no CRD schema for {key}"
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: e.json_path
        )
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
            f"{error.json_path}: {error.message}" for error in errors
        )


def test_the_scenarios_cover_every_kind_the_chart_can_render() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for values in CI_VALUES for doc in render(values)}
    expected = {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("v1", "Pod"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    }
    assert kinds == expected


def test_the_crd_schemas_refuse_an_unknown_field() -> None:
    """The strict CRD check is not vacuous."""
    doc = next(d for d in render("keda-values.yaml") if d["kind"] == "ScaledObject")
    broken = {**doc, "spec": {**doc["spec"], "minReplicas": 1}}
    schema = crd_schemas()[("keda.sh/v1alpha1", "ScaledObject")]
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)
