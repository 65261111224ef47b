"""templates/validation.yaml: contradictory values fail the render, all problems at once."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.chart.helm import render, render_error

BROKEN = {
    "config": {
        "hostname": "",
        "broker": {"url": "amqp://guest:guest@rabbitmq:5672/"},
        "ingress": {
            "listen": [{"host": "0.0.0.0", "port": 25}],
            "proxy_protocol": {"enabled": True},
        },
        "metrics": {"host": "127.0.0.1"},
        "delivery": {"nameservers": ["10.96.0.10:5353"]},
    },
    "rabbitmq": {"external": {"enabled": True, "url": "", "existingSecret": ""}},
    "keda": {"enabled": True},
    "ingress": {
        "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
        "service": {"ports": [{"name": "smtp", "port": 25, "targetPort": 2600}]},
    },
    "queue": {"pdb": {"minAvailable": 2}},
    "delivery": {"terminationGracePeriodSeconds": 10},
    "bounce": {"pdb": {"maxUnavailable": 0}},
    "tls": {"enabled": True},
    "dkim": {"enabled": True},
    "auth": {"enabled": True},
}

EXPECTED = [
    "rabbitmq.external: set existingSecret",
    "config.broker.url: keep the broker URL out of the ConfigMap",
    "keda.enabled: KEDA reads queue depths with the broker URL from a Secret, and there is none",
    "config.hostname: required",
    "config.metrics.host: must be 0.0.0.0 or ::",
    "config.ingress.listen: port 25 needs root",
    "config.ingress.proxy_protocol.enabled: set ingress.proxyProtocol.enabled instead",
    "ingress.service.ports: smtp targets port 2600, where ingress does not listen",
    "ingress.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
    "queue.pdb.minAvailable: 2 with as few as 1 pod(s) would block every node drain",
    "delivery.terminationGracePeriodSeconds: 10 is shorter than preStopSleepSeconds + the "
    "shutdown grace (30 s)",
    "bounce.pdb.maxUnavailable: 0 would block every node drain",
    "tls: enabled, but neither existingSecret nor both cert and key are set",
    "dkim: enabled, but neither existingSecret nor keys are set",
    "auth: enabled, but neither existingSecret nor users are set",
    "config.delivery.nameservers: 10.96.0.10:5353 is on port 5353",
    "tests: the helm test probe needs a recipient",
]


def write(tmp_path: Path, values: dict[str, object]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def problems(message: str) -> list[str]:
    return re.findall(r"^  - (.*)$", message, flags=re.MULTILINE)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = render_error(write(tmp_path, BROKEN))
    assert f"have {len(EXPECTED)} problem(s)" in message
    found = problems(message)
    assert len(found) == len(EXPECTED), "\n".join(found)
    for expected in EXPECTED:
        assert any(line.startswith(expected) for line in found), f"missing: {expected}"


def test_the_defaults_alone_say_what_an_install_needs() -> None:
    found = problems(render_error())
    assert [line.split(":")[0] for line in found] == [
        "rabbitmq.external",
        "config.hostname",
        "tests",
    ]


def test_one_broker_exactly(tmp_path: Path) -> None:
    base = {"config": {"hostname": "mx.example.com"}, "tests": {"enabled": False}}
    both = render_error(
        write(tmp_path, {**base, "rabbitmq": {"cluster": {"enabled": True}}}),
        settings=("rabbitmq.external.url=amqp://h/",),
    )
    assert "external.enabled and cluster.enabled are both true" in both
    neither = render_error(write(tmp_path, {**base, "rabbitmq": {"external": {"enabled": False}}}))
    assert "neither external.enabled nor cluster.enabled" in neither
    twice = render_error(
        write(
            tmp_path,
            {**base, "rabbitmq": {"external": {"url": "http://h/", "existingSecret": "s"}}},
        )
    )
    assert "url and existingSecret are both set" in twice
    assert "must start with amqp:// or amqps://" in twice


def test_a_chart_created_cluster_must_hold_the_largest_message(tmp_path: Path) -> None:
    values = {
        "config": {"hostname": "mx.example.com", "ingress": {"max_message_size": 26214400}},
        "tests": {"enabled": False},
        "rabbitmq": {
            "external": {"enabled": False},
            "cluster": {"enabled": True, "replicas": 2, "maxMessageSize": 16777216},
        },
    }
    found = problems(render_error(write(tmp_path, values)))
    assert len(found) == 2
    assert found[0].startswith("rabbitmq.cluster.replicas: 2; use an odd number")
    assert found[1].startswith(
        "rabbitmq.cluster.maxMessageSize: 16777216 bytes cannot hold a message of "
        "config.ingress.max_message_size (26214400)"
    )


def test_the_schema_refuses_what_the_app_would_refuse() -> None:
    """values.schema.json carries the app's config model: unknown keys stop helm first."""
    message = render_error(
        "default-values.yaml",
        settings=("config.ingress.max_size=1", "config.queue.retry_delays[0]=soon"),
    )
    assert "additional properties 'max_size' not allowed" in message
    assert "/config/queue/retry_delays/0" in message


def test_scaling_to_zero_needs_keda() -> None:
    message = render_error(
        "default-values.yaml",
        settings=("queue.autoscaling.enabled=true", "queue.autoscaling.minReplicas=0"),
    )
    assert problems(message) == [
        "queue.autoscaling.minReplicas: 0 needs KEDA (keda.enabled, for queue and delivery); "
        "a CPU HPA keeps at least 1 pod"
    ]
    docs = render("keda-values.yaml", settings=("queue.autoscaling.minReplicas=0",))
    scaled = [d for d in docs if d["kind"] == "ScaledObject" and "queue" in d["metadata"]["name"]]
    assert scaled[0]["spec"]["minReplicaCount"] == 0


def test_the_embedded_spool_is_refused_wherever_it_is_asked_for(tmp_path):
    values = {
        "config": {"broker": {"url": "embedded"}},
        "delivery": {"extraEnv": [{"name": "MAILYARD_BROKER__URL", "value": "embedded"}]},
    }
    error = render_error(write(tmp_path, values))
    assert (
        "config.broker.url, delivery.extraEnv: the embedded spool is for one process on one "
        "machine (`mailyard all`)"
    ) in error
    assert "a spool has exactly one owner; keep RabbitMQ here" in error
    assert "keep the broker URL out of the ConfigMap" not in error
