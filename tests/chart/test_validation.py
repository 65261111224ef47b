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


def test_submission_listeners_need_tls_and_auth() -> None:
    """All listeners that lack them are named, in one problem per missing Secret."""
    message = render_error(
        "submission-values.yaml", settings=("tls.enabled=false", "auth.enabled=false")
    )
    assert problems(message) == [
        "config.ingress.listen: submission (port 2587), submissions (port 2465) need TLS (AUTH "
        "is offered only over TLS, and submissions is TLS from the first byte); set tls.enabled "
        "with tls.existingSecret (a kubernetes.io/tls Secret, e.g. cert-manager's) or tls.cert "
        "and tls.key",
        "config.ingress.listen: submission (port 2587), submissions (port 2465) need AUTH (every "
        "transaction there is authenticated); set auth.enabled with auth.users or "
        "auth.existingSecret",
    ]
    only_auth = problems(render_error("submission-values.yaml", settings=("auth.enabled=false",)))
    assert [line.split(" need")[0] for line in only_auth] == [
        "config.ingress.listen: submission (port 2587), submissions (port 2465)"
    ]
    assert "need AUTH" in only_auth[0]


def test_a_listener_without_a_service_port_and_a_service_port_without_a_listener() -> None:
    message = render_error(
        "submission-values.yaml",
        settings=("ingress.service.ports[2].targetPort=2466",),
    )
    assert problems(message) == [
        "ingress.service.ports: submissions targets port 2466, where ingress does not listen "
        "(config.ingress.listen: [2525,2587,2465])"
    ]


def test_the_chart_owns_the_tls_and_auth_keys_it_writes() -> None:
    message = render_error(
        "submission-values.yaml",
        settings=(
            "config.ingress.tls.cert_file=/etc/certs/tls.crt",
            "config.ingress.tls.key_file=/etc/certs/tls.key",
            "config.ingress.auth.users_file=/etc/users.yaml",
        ),
    )
    assert [line.split(":")[0] for line in problems(message)] == [
        "config.ingress.tls",
        "config.ingress.auth",
    ]
    # With tls off, your own files (mounted with ingress.extraVolumes) are yours to name.
    docs = render(
        "default-values.yaml",
        settings=(
            "config.ingress.tls.cert_file=/etc/certs/tls.crt",
            "config.ingress.tls.key_file=/etc/certs/tls.key",
        ),
    )
    [configmap] = [d for d in docs if d["metadata"]["name"] == "mx-mailyard-config"]
    assert yaml.safe_load(configmap["data"]["mailyard.yaml"])["ingress"]["tls"] == {
        "cert_file": "/etc/certs/tls.crt",
        "key_file": "/etc/certs/tls.key",
    }


def test_auth_users_need_hashed_passwords_and_the_message_never_repeats_one() -> None:
    secret = "correct horse battery staple"
    message = render_error(
        "submission-values.yaml",
        settings=(f"auth.users.app.password={secret}", "auth.users.other.password=$2b$12$abc"),
    )
    assert problems(message) == [
        f"auth.users.{name}.password: not a `mailyard auth hash` value ($scrypt$...); ingress "
        "refuses plain text and other schemes, and would not start"
        for name in ("app", "other")
    ]
    assert secret not in message
    assert "$2b$12$abc" not in message


def test_auth_users_have_the_shape_of_the_users_file() -> None:
    """The old `name: hash` form, and keys the app does not know, stop at the schema."""
    message = render_error("submission-values.yaml", settings=("auth.users.app=$scrypt$x",))
    assert "/auth/users/app" in message
    assert "want object" in message
    message = render_error(
        "submission-values.yaml", settings=("auth.users.app.domains[0]=example.com",)
    )
    assert "additional properties 'domains' not allowed" in message


def test_the_probe_needs_an_mx_port() -> None:
    message = render_error(
        "submission-values.yaml",
        settings=(
            "ingress.service.ports[0].name=submission",
            "ingress.service.ports[0].port=587",
            "ingress.service.ports[0].targetPort=2587",
        ),
    )
    assert problems(message) == [
        "tests: the helm test probe sends without AUTH, so it needs an ingress.service.ports "
        "entry whose targetPort is an mx listener; add one or set tests.enabled=false"
    ]
    render(
        "submission-values.yaml",
        settings=(
            "ingress.service.ports[0].name=submission",
            "ingress.service.ports[0].port=587",
            "ingress.service.ports[0].targetPort=2587",
            "tests.enabled=false",
        ),
    )


def test_the_schema_knows_the_listener_roles() -> None:
    """Roles come from the app's model (config.py → values.schema.json): a typo stops helm."""
    message = render_error(
        "default-values.yaml",
        settings=("config.ingress.listen[0].port=2525", "config.ingress.listen[0].role=relay"),
    )
    assert "/config/ingress/listen/0/role" in message
    assert "'mx', 'submission', 'submissions'" in message
