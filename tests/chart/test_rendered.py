"""What the rendered chart must say, whatever the scenario: hardening, probes,
drain, scaling, network policies, and a configuration the app itself accepts."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mailyard.config import load_settings
from mailyard.durations import parse_duration
from tests.chart.helm import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    Document,
    component,
    config_schema_has,
    find,
    one,
    pod_specs,
    render,
    render_error,
)

COMPONENTS = ("ingress", "queue", "delivery", "bounce")
scenarios = pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])


def deployments(docs: list[Document]) -> dict[str, Document]:
    return {component(doc): doc for doc in find(docs, "Deployment")}


def container(deployment: Document) -> Document:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config_file(docs: list[Document]) -> dict[str, Any]:
    configmap = one(docs, "ConfigMap", "mx-mailyard-config")
    return yaml.safe_load(configmap["data"]["mailyard.yaml"])


def env(deployment: Document) -> dict[str, Any]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


# --- hardening, probes, drain -------------------------------------------------


@scenarios
def test_every_pod_and_container_is_hardened(values: Path) -> None:
    specs = pod_specs(render(values))
    assert len(specs) >= 4
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == 10001, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        tmp = {v["name"]: v for v in spec["volumes"]}["tmp"]
        assert "emptyDir" in tmp, where
        for box in spec["containers"] + spec.get("initContainers", []):
            context = box["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == 10001, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"]: m for m in box["volumeMounts"]}
            assert mounts["/tmp"]["name"] == "tmp", where
            assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp"), where


@scenarios
def test_probes_are_on_the_metrics_port(values: Path) -> None:
    docs = render(values)
    metrics_port = config_file(docs)["metrics"]["port"]
    found = deployments(docs)
    assert set(found) == set(COMPONENTS)
    for name, deployment in found.items():
        box = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in box["ports"]}
        assert ports["metrics"] == metrics_port, name
        assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, name
        assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
        assert box["args"] == [name, "--config", "/etc/mailyard/mailyard.yaml"], name


@scenarios
def test_termination_grace_covers_prestop_and_drain(values: Path) -> None:
    docs = render(values)
    configured = config_file(docs).get("shutdown_grace", "25s")
    for name, deployment in deployments(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", name
        grace = env(deployment).get("MAILYARD_SHUTDOWN_GRACE", {}).get("value", configured)
        drain = parse_duration(grace).total_seconds()
        assert spec["terminationGracePeriodSeconds"] >= int(command[1]) + drain, name


def test_termination_grace_follows_the_drain_of_each_service() -> None:
    docs = render(
        "default-values.yaml",
        settings=(
            "config.shutdown_grace=1m30s",
            "delivery.preStopSleepSeconds=7",
            "bounce.shutdownGrace=2m",
            "queue.terminationGracePeriodSeconds=600",
        ),
    )
    found = deployments(docs)

    def grace(name: str) -> int:
        return int(found[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    assert grace("ingress") == 5 + 90 + 10
    assert grace("delivery") == 7 + 90 + 10
    assert grace("bounce") == 5 + 120 + 10
    assert grace("queue") == 600
    assert env(found["bounce"])["MAILYARD_SHUTDOWN_GRACE"]["value"] == "2m"
    assert "MAILYARD_SHUTDOWN_GRACE" not in env(found["ingress"])


# --- the configuration file ---------------------------------------------------


@scenarios
def test_the_config_file_is_one_the_app_accepts(
    values: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded by the app's own loader, with the environment each pod gets: the
    chart renders no key that services/mailyard/config.py would refuse."""
    docs = render(values)
    path = tmp_path / "mailyard.yaml"
    path.write_text(one(docs, "ConfigMap", "mx-mailyard-config")["data"]["mailyard.yaml"])
    for name, deployment in deployments(docs).items():
        for variable in [v for v in os.environ if v.startswith("MAILYARD_")]:
            monkeypatch.delenv(variable)
        for variable, item in env(deployment).items():
            assert variable.startswith("MAILYARD_"), variable
            if "valueFrom" in item:
                assert variable == "MAILYARD_BROKER__URL", name
                monkeypatch.setenv(variable, "amqp://user:password@rabbitmq:5672/")
            else:
                monkeypatch.setenv(variable, item["value"])
        settings = load_settings(path)
        assert settings.hostname == "mx.example.com"
        assert settings.broker.url == "amqp://user:password@rabbitmq:5672/", name
        assert settings.metrics.host == "0.0.0.0"
        ports = {p["containerPort"] for p in container(deployment)["ports"]}
        assert settings.metrics.port in ports
        if name == "ingress":
            assert {listener.port for listener in settings.ingress.listen} <= ports
    assert "url" not in config_file(docs).get("broker", {})


def test_the_suppression_settings_reach_the_app(tmp_path: Path) -> None:
    docs = render(
        "default-values.yaml",
        settings=(
            "config.suppression.hard_bounce_expiry=90d",
            "config.suppression.expired_strikes=0",
            "config.suppression.snapshot_interval=6h",
        ),
    )
    assert config_file(docs)["suppression"] == {
        "hard_bounce_expiry": "90d",
        "expired_strikes": 0,
        "snapshot_interval": "6h",
    }
    path = tmp_path / "mailyard.yaml"
    path.write_text(one(docs, "ConfigMap", "mx-mailyard-config")["data"]["mailyard.yaml"])
    suppression = load_settings(path).suppression
    assert suppression.hard_bounce_expiry == parse_duration("90d")
    assert suppression.expired_strikes == 0
    assert suppression.expired_strikes_window == parse_duration("30d")  # the default stays


def test_config_changes_roll_the_pods() -> None:
    before = deployments(render("default-values.yaml"))
    after = deployments(render("default-values.yaml", settings=("config.log.level=debug",)))
    for name in COMPONENTS:
        old = before[name]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        new = after[name]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert old != new, name


def test_proxy_protocol_is_written_into_the_config_and_skips_the_test_pod() -> None:
    docs = render("nodeport-values.yaml")
    proxy = config_file(docs)["ingress"]["proxy_protocol"]
    assert proxy == {"enabled": True, "trusted_networks": ["10.0.0.0/8"]}
    assert not find(docs, "Pod")


# --- services and secrets -----------------------------------------------------


def test_ingress_is_a_load_balancer_that_keeps_client_addresses() -> None:
    service = one(render("default-values.yaml"), "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"] == [
        {"name": "smtp", "port": 25, "targetPort": 2525, "protocol": "TCP"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ingress"


def test_ingress_as_a_node_port_with_two_listeners() -> None:
    docs = render("nodeport-values.yaml")
    service = one(docs, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert [(p["port"], p["targetPort"], p["nodePort"]) for p in service["spec"]["ports"]] == [
        (25, 2525, 30025),
        (587, 2587, 30587),
    ]
    ports = {
        p["name"]: p["containerPort"] for p in container(deployments(docs)["ingress"])["ports"]
    }
    assert ports == {"metrics": 9102, "smtp": 2525, "smtp-2587": 2587}


def test_mx_submission_and_submissions_listen_and_are_reachable() -> None:
    docs = render("submission-values.yaml")
    listen = config_file(docs)["ingress"]["listen"]
    assert [(item["port"], item["role"]) for item in listen] == [
        (2525, "mx"),
        (2587, "submission"),
        (2465, "submissions"),
    ]
    service = one(docs, "Service")
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("smtp", 25, 2525),
        ("submission", 587, 2587),
        ("submissions", 465, 2465),
    ]
    ports = {p["containerPort"] for p in container(deployments(docs)["ingress"])["ports"]}
    assert {2525, 2587, 2465} <= ports
    policy = one(docs, "NetworkPolicy", "mx-mailyard-ingress-smtp")
    [rule] = policy["spec"]["ingress"]
    assert "from" not in rule, "SMTP is open to anyone"
    assert rule["ports"] == [{"protocol": "TCP", "port": port} for port in (2525, 2587, 2465)]


def test_the_default_listener_is_mx_on_2525_behind_port_25() -> None:
    docs = render("default-values.yaml")
    assert config_file(docs)["ingress"]["listen"] == [
        {"host": "0.0.0.0", "port": 2525, "role": "mx"}
    ]
    assert [(p["port"], p["targetPort"]) for p in one(docs, "Service")["spec"]["ports"]] == [
        (25, 2525)
    ]


def test_the_probe_sends_to_an_mx_port_whatever_the_order() -> None:
    """Submission ports want AUTH, which the probe does not do."""
    docs = render(
        "submission-values.yaml",
        settings=(
            "ingress.service.ports[0].name=submissions",
            "ingress.service.ports[0].port=465",
            "ingress.service.ports[0].targetPort=2465",
            "ingress.service.ports[2].name=smtp",
            "ingress.service.ports[2].port=25",
            "ingress.service.ports[2].targetPort=2525",
        ),
    )
    args = one(docs, "Pod")["spec"]["containers"][0]["args"]
    assert args[args.index("--port") + 1] == "25"


def test_broker_url_comes_from_the_secret_the_values_name() -> None:
    created = render("default-values.yaml")
    secret = one(created, "Secret", "mx-mailyard-broker")
    assert set(secret["data"]) == {"url"}
    existing = render("existing-secrets-values.yaml")
    assert not find(existing, "Secret")
    for docs, name, key in (
        (created, "mx-mailyard-broker", "url"),
        (existing, "rabbitmq-mailyard", "url"),
        (render("keda-values.yaml"), "rabbitmq-mailyard", "amqp-url"),
    ):
        for deployment in deployments(docs).values():
            reference = env(deployment)["MAILYARD_BROKER__URL"]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": name, "key": key}


def test_tls_dkim_auth_and_relay_files_are_mounted_read_only_where_they_are_used() -> None:
    expected = {
        "ingress": {
            "/etc/mailyard/tls": "secret mx-example-com-tls",
            "/etc/mailyard/auth": "secret mailyard-smtp-users",
        },
        "queue": {
            "/etc/mailyard/dkim": "secret mailyard-dkim",
            "/etc/mailyard/verp": "secret mailyard-verp",
        },
        "delivery": {
            "/etc/mailyard/smarthost": "secret relay-credentials",
            "/etc/mailyard/delivery-ca": "configMap mail-trust-bundle",
        },
        "bounce": {"/etc/mailyard/verp": "secret mailyard-verp"},
    }
    for name, deployment in deployments(render("existing-secrets-values.yaml")).items():
        spec = deployment["spec"]["template"]["spec"]
        sources = {
            v["name"]: f"secret {v['secret']['secretName']}"
            if "secret" in v
            else f"configMap {v['configMap']['name']}"
            for v in spec["volumes"]
            if ("secret" in v or "configMap" in v) and v["name"] != "config"
        }
        mounts = {
            m["mountPath"]: sources[m["name"]]
            for m in container(deployment)["volumeMounts"]
            if m["name"] in sources
        }
        assert mounts == expected[name], name
        for mount in container(deployment)["volumeMounts"]:
            if mount["name"] in sources:
                assert mount["readOnly"] is True, (name, mount["name"])
                assert "subPath" not in mount, "a subPath mount never sees the Secret's updates"


def test_secrets_created_from_values() -> None:
    docs = render("rabbitmq-cluster-values.yaml")
    assert one(docs, "Secret", "mx-mailyard-tls")["type"] == "kubernetes.io/tls"
    assert set(one(docs, "Secret", "mx-mailyard-tls")["data"]) == {"tls.crt", "tls.key"}
    assert set(one(docs, "Secret", "mx-mailyard-dkim")["data"]) == {"example.com.s1.pem"}
    assert set(one(docs, "Secret", "mx-mailyard-auth")["data"]) == {"users.yaml"}
    verp = base64.b64decode(one(docs, "Secret", "mx-mailyard-verp")["data"]["secret"])
    assert verp == b"example-only-verp-secret-new-2025\nexample-only-verp-secret-old-2024\n"
    found = deployments(docs)
    ingress = found["ingress"]["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in ingress
    # The app re-reads them: a renewal or a rotation must not restart the pods.
    for name in COMPONENTS:
        annotations = found[name]["spec"]["template"]["metadata"]["annotations"]
        assert [key for key in annotations if key.startswith("checksum/")] == ["checksum/config"]
    relay = one(render("outbound-values.yaml"), "Secret", "mx-mailyard-smarthost")
    assert base64.b64decode(relay["data"]["password"]) == b"example-only-relay-password"


def users_file(docs: list[Document], secret: str = "mx-mailyard-auth") -> str:
    return base64.b64decode(one(docs, "Secret", secret)["data"]["users.yaml"]).decode()


@scenarios
def test_tls_and_auth_are_the_files_of_their_secrets(values: Path) -> None:
    """ingress.tls and ingress.auth name the files where the pods mount the Secrets."""
    docs = render(values)
    ingress = config_file(docs)["ingress"]
    deployment = deployments(docs)["ingress"]
    spec = deployment["spec"]["template"]["spec"]
    volume_mounts = container(deployment)["volumeMounts"]
    mounts = {m["name"]: m["mountPath"] for m in volume_mounts}
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    if "tls" in secrets:
        assert ingress["tls"] == {
            "cert_file": f"{mounts['tls']}/tls.crt",
            "key_file": f"{mounts['tls']}/tls.key",
        }
    else:
        assert "tls" not in ingress
    if "auth" in secrets:
        assert ingress["auth"] == {"users_file": f"{mounts['auth']}/users.yaml"}
        created = find(docs, "Secret", secrets["auth"])
        if created:
            assert set(created[0]["data"]) == {"users.yaml"}
    else:
        assert "auth" not in ingress
    for mount in volume_mounts:
        if mount["name"] in ("tls", "auth"):
            assert "subPath" not in mount, "a subPath mount never sees the Secret's updates"


@pytest.mark.parametrize("values", ["submission-values.yaml", "rabbitmq-cluster-values.yaml"])
def test_the_users_file_is_one_the_app_accepts(values: str, tmp_path: Path) -> None:
    """The users.yaml the chart writes from auth.users, read by the app's own loader."""
    from mailyard.ingress.auth import load_users

    docs = render(values)
    path = tmp_path / "users.yaml"
    path.write_text(users_file(docs))
    users = load_users(path)
    configured = yaml.safe_load((CHART / "ci" / values).read_text())["auth"]["users"]
    assert set(users) == set(configured)
    for name, entry in configured.items():
        user, _ = users[name]
        domains = entry.get("sender_domains")
        assert user.sender_domains == (frozenset(domains) if domains else None), name
        assert user.message_class == entry.get("class"), name


def test_a_renewed_certificate_or_a_new_user_restarts_nothing() -> None:
    """The app re-reads the mounted files; only the Secrets change, never the pods."""
    before = render("rabbitmq-cluster-values.yaml")
    after = render(
        "rabbitmq-cluster-values.yaml",
        settings=(
            "tls.cert=-----BEGIN CERTIFICATE-----\nrenewed\n-----END CERTIFICATE-----",
            # helm's --set splits at commas unless they are escaped.
            r"auth.users.other.password=$scrypt$ln=14\,r=8\,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        ),
    )
    assert users_file(before) != users_file(after)
    assert one(before, "Secret", "mx-mailyard-tls") != one(after, "Secret", "mx-mailyard-tls")
    old, new = deployments(before), deployments(after)
    for name in COMPONENTS:
        assert old[name]["spec"]["template"] == new[name]["spec"]["template"], name


def secret_files(docs: list[Document], name: str) -> dict[str, str]:
    return {
        file: base64.b64decode(data).decode()
        for file, data in one(docs, "Secret", name)["data"].items()
    }


@scenarios
def test_dkim_keys_are_the_files_of_their_secret(values: Path) -> None:
    """config dkim.keys is dkim.keys, one to one, with key_file where queue mounts the Secret."""
    docs = render(values)
    configured = yaml.safe_load(values.read_text()).get("dkim", {})
    deployment = deployments(docs)["queue"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    if not configured.get("enabled"):
        assert "dkim" not in config_file(docs)
        assert "dkim" not in mounts
        return
    keys = config_file(docs)["dkim"]["keys"]
    assert [(k["domain"], k["selector"]) for k in keys] == [
        (k["domain"], k["selector"]) for k in configured["keys"]
    ]
    files = [k.get("file") or f"{k['domain']}.{k['selector']}.pem" for k in configured["keys"]]
    assert [k["key_file"] for k in keys] == [f"{mounts['dkim']}/{file}" for file in files]
    if not configured.get("existingSecret"):
        created = secret_files(docs, "mx-mailyard-dkim")
        assert set(created) == set(files)
        for key, file in zip(configured["keys"], files, strict=True):
            assert created[file] == key["pem"]
    for name in ("ingress", "delivery", "bounce"):
        volumes = deployments(docs)[name]["spec"]["template"]["spec"]["volumes"]
        assert "dkim" not in {v["name"] for v in volumes}, "the keys go to queue only"


def test_the_dkim_keys_the_chart_writes_sign_mail(tmp_path: Path) -> None:
    """The Secret and the config dkim.keys the chart renders, used by the app's own Signer."""
    from mailyard.queue import dkimkeys
    from mailyard.queue.signing import Signer

    pems = {
        alg: dkimkeys.private_pem(dkimkeys.generate(alg)).decode() for alg in ("rsa", "ed25519")
    }
    values = {
        "dkim": {
            "enabled": True,
            "keys": [
                {"domain": "example.com", "selector": "rsa1", "pem": pems["rsa"]},
                {
                    "domain": "example.com",
                    "selector": "ed1",
                    "file": "ed.pem",
                    "pem": pems["ed25519"],
                },
            ],
        }
    }
    values_file = tmp_path / "dkim-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    docs = render("default-values.yaml", values_file)
    mount = tmp_path / "etc-mailyard-dkim"
    mount.mkdir()
    for file, pem in secret_files(docs, "mx-mailyard-dkim").items():
        (mount / file).write_text(pem)
    config = tmp_path / "mailyard.yaml"
    config.write_text(one(docs, "ConfigMap", "mx-mailyard-config")["data"]["mailyard.yaml"])
    keys = load_settings(config).dkim.keys
    assert {str(k.key_file) for k in keys} == {
        "/etc/mailyard/dkim/example.com.rsa1.pem",
        "/etc/mailyard/dkim/ed.pem",
    }
    here = [k.model_copy(update={"key_file": mount / k.key_file.name}) for k in keys]
    signed = Signer(here).sign(
        b"From: app@news.example.com\r\nTo: someone@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    assert signed.domains == ("example.com", "example.com")
    assert signed.content.count(b"DKIM-Signature:") == 2


def test_the_verp_secret_is_a_file_queue_and_bounce_read(tmp_path: Path) -> None:
    """bounce.verp_secret_file names the mounted Secret's key; its lines are a keyring."""
    from mailyard import verp

    docs = render("rabbitmq-cluster-values.yaml")
    config = config_file(docs)
    assert config["bounce"] == {
        "return_path_domain": "bounces.example.com",
        "verp_secret_file": "/etc/mailyard/verp/secret",
    }
    secret = base64.b64decode(one(docs, "Secret", "mx-mailyard-verp")["data"]["secret"])
    path = tmp_path / "secret"
    path.write_bytes(secret)
    assert verp.load_keyring((path,)).secrets == (
        b"example-only-verp-secret-new-2025",
        b"example-only-verp-secret-old-2024",
    )
    mine = config_file(render("existing-secrets-values.yaml"))["bounce"]
    assert mine["verp_secret_file"] == "/etc/mailyard/verp/verp-secret"
    # Off: nothing mounted, no key written.
    docs = render("default-values.yaml")
    assert "bounce" not in config_file(docs)
    assert not [d for d in docs if d["metadata"]["name"] == "mx-mailyard-verp"]


@pytest.mark.parametrize(
    ("values", "password", "bundle"),
    [
        ("outbound-values.yaml", ("mx-mailyard-smarthost", "password"), ("secret", "partner-ca")),
        (
            "existing-secrets-values.yaml",
            ("relay-credentials", "password"),
            ("configMap", "mail-trust-bundle"),
        ),
    ],
)
def test_smarthost_password_and_ca_bundle_are_files_of_what_delivery_mounts(
    values: str, password: tuple[str, str], bundle: tuple[str, str]
) -> None:
    docs = render(values)
    delivery = config_file(docs)["delivery"]
    configured = yaml.safe_load((CHART / "ci" / values).read_text())["delivery"]
    spec = deployments(docs)["delivery"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {
        m["name"]: m["mountPath"] for m in container(deployments(docs)["delivery"])["volumeMounts"]
    }
    secret, key = password
    assert volumes["smarthost"]["secret"]["secretName"] == secret
    assert delivery["smarthost"]["password_file"] == f"/etc/mailyard/smarthost/{key}"
    assert mounts["smarthost"] == "/etc/mailyard/smarthost"
    kind, name = bundle
    source = volumes["delivery-ca"][kind]
    assert source.get("name", source.get("secretName")) == name
    ca_key = configured["tlsCA"].get("key", "ca.crt")
    assert delivery["tls_ca_file"] == f"/etc/mailyard/delivery-ca/{ca_key}"
    assert mounts["delivery-ca"] == "/etc/mailyard/delivery-ca"
    for other in ("ingress", "queue", "bounce"):
        names = {v["name"] for v in deployments(docs)[other]["spec"]["template"]["spec"]["volumes"]}
        assert not {"smarthost", "delivery-ca"} & names, other


def test_without_a_relay_password_or_a_ca_bundle_delivery_mounts_nothing_more() -> None:
    docs = render("default-values.yaml")
    assert "delivery" not in config_file(docs)
    spec = deployments(docs)["delivery"]["spec"]["template"]["spec"]
    assert {v["name"] for v in spec["volumes"]} == {"config", "tmp"}
    assert not find(docs, "Secret", "mx-mailyard-smarthost")


def test_dane_is_written_into_the_config_from_delivery_dane() -> None:
    delivery = config_file(render("outbound-values.yaml"))["delivery"]
    assert delivery["dane"] == {"enabled": True}
    assert delivery["nameservers"] == ["10.96.0.53"]
    off = render("outbound-values.yaml", settings=("delivery.dane.enabled=false",))
    assert "dane" not in config_file(off)["delivery"]  # the app's default: off


def test_the_relay_password_file_is_one_delivery_reads(tmp_path: Path) -> None:
    """The chart's Secret, read by delivery's own smarthost loader."""
    from mailyard.delivery.routes import smarthost_from

    docs = render("outbound-values.yaml")
    password = tmp_path / "password"
    password.write_text(secret_files(docs, "mx-mailyard-smarthost")["password"])
    relay = config_file(docs)["delivery"]["smarthost"]
    smarthost = smarthost_from(
        relay["host"],
        relay["port"],
        relay["domains"],
        tls=relay["tls"],
        username=relay["username"],
        password_file=password,
    )
    login = smarthost.login()
    assert login is not None
    assert (login.username, login.password) == ("mailyard", "example-only-relay-password")


def test_a_rotated_dkim_key_or_relay_password_restarts_nothing() -> None:
    """queue re-reads its key files and delivery the password file: only the Secrets change."""
    before = render("outbound-values.yaml")
    after = render(
        "outbound-values.yaml",
        settings=(
            "dkim.keys[0].pem=-----BEGIN PRIVATE KEY-----\nrotated\n-----END PRIVATE KEY-----",
            "dkim.keys[1].pem=-----BEGIN PRIVATE KEY-----\nrotated\n-----END PRIVATE KEY-----",
            "delivery.smarthost.password=rotated-password",
        ),
    )
    for secret in ("mx-mailyard-dkim", "mx-mailyard-smarthost"):
        assert one(before, "Secret", secret) != one(after, "Secret", secret), secret
    old, new = deployments(before), deployments(after)
    for name in COMPONENTS:
        assert old[name]["spec"]["template"] == new[name]["spec"]["template"], name
    # A new key is a new entry of the configuration file: that rolls the pods.
    added = deployments(
        render(
            "outbound-values.yaml",
            settings=(
                "dkim.keys[2].domain=example.net",
                "dkim.keys[2].selector=s1",
                "dkim.keys[2].pem=x",
            ),
        )
    )
    assert added["queue"]["spec"]["template"] != old["queue"]["spec"]["template"]


def test_rabbitmq_cluster_for_the_operator() -> None:
    """Checked field by field: the operator's CRD is not downloadable here (crds.py)."""
    docs = render("rabbitmq-cluster-values.yaml")
    cluster = one(docs, "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["metadata"]["name"] == "mx-mailyard-rabbitmq"
    spec = cluster["spec"]
    assert set(spec) == {"replicas", "persistence", "resources", "rabbitmq"}
    assert spec["replicas"] == 3
    assert spec["persistence"] == {"storageClassName": "fast-ssd", "storage": "50Gi"}
    assert set(spec["rabbitmq"]) == {"additionalConfig", "additionalPlugins"}
    assert "max_message_size = 67108864\n" in spec["rabbitmq"]["additionalConfig"]
    assert not find(docs, "Secret", "mx-mailyard-broker")
    reference = {"name": "mx-mailyard-rabbitmq-default-user", "key": "connection_string"}
    for deployment in deployments(docs).values():
        assert env(deployment)["MAILYARD_BROKER__URL"]["valueFrom"]["secretKeyRef"] == reference
    for auth in find(docs, "TriggerAuthentication"):
        assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", **reference}]


# --- scaling ------------------------------------------------------------------


def test_keda_scales_queue_and_delivery_on_their_queues() -> None:
    docs = render("keda-values.yaml")
    scaled = {component(doc): doc for doc in find(docs, "ScaledObject")}
    assert set(scaled) == {"queue", "delivery"}
    assert {component(doc) for doc in find(docs, "HorizontalPodAutoscaler")} == {"ingress"}
    queues = {
        name: [t["metadata"]["queueName"] for t in doc["spec"]["triggers"]]
        for name, doc in scaled.items()
    }
    assert queues == {
        "queue": ["mail.inbound", "mail.deferred"],
        # A lane per message class: config.queue.classes is unset, so the app's two.
        "delivery": ["mail.delivery", "mail.delivery.bulk"],
    }
    auths = {doc["metadata"]["name"]: doc for doc in find(docs, "TriggerAuthentication")}
    for name, doc in scaled.items():
        assert doc["spec"]["scaleTargetRef"]["name"] == f"mx-mailyard-{name}"
        for trigger in doc["spec"]["triggers"]:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert trigger["metadata"]["protocol"] == "amqp"
            auth = auths[trigger["authenticationRef"]["name"]]
            assert auth["spec"]["secretTargetRef"] == [
                {"parameter": "host", "name": "rabbitmq-mailyard", "key": "amqp-url"}
            ]
    delivery = scaled["delivery"]["spec"]
    assert (delivery["minReplicaCount"], delivery["maxReplicaCount"]) == (2, 30)
    assert delivery["triggers"][0]["metadata"]["value"] == "50"
    found = deployments(docs)
    for name in ("queue", "delivery", "ingress"):
        assert "replicas" not in found[name]["spec"], f"{name}: the autoscaler owns replicas"
    assert found["bounce"]["spec"]["replicas"] == 1


def test_keda_scales_delivery_on_every_lane_of_the_configured_classes(tmp_path: Path) -> None:
    values = tmp_path / "classes.yaml"
    values.write_text(
        yaml.safe_dump(
            {"config": {"queue": {"classes": {"bulk": 1, "transactional": 20, "alerts": 5}}}}
        )
    )
    docs = render("keda-values.yaml", values, schema=config_schema_has("queue.classes"))
    scaled = {component(doc): doc for doc in find(docs, "ScaledObject")}
    triggers = scaled["delivery"]["spec"]["triggers"]
    assert [(t["name"], t["metadata"]["queueName"]) for t in triggers] == [
        ("delivery", "mail.delivery"),  # transactional first
        ("delivery-alerts", "mail.delivery.alerts"),
        ("delivery-bulk", "mail.delivery.bulk"),
    ]
    assert {t["metadata"]["value"] for t in triggers} == {"50"}, "one target for every lane"
    assert {t["authenticationRef"]["name"] for t in triggers} == {"mx-mailyard-delivery"}
    queue = [t["metadata"]["queueName"] for t in scaled["queue"]["spec"]["triggers"]]
    assert queue == ["mail.inbound", "mail.deferred"], "lanes are delivery's alone"


def test_shaping_classes_and_egress_keys_reach_the_app_as_written(tmp_path: Path) -> None:
    """The chart passes config through: the keys of traffic shaping, classes and egress
    addresses arrive in the file unchanged (and, once the app's model has them, load)."""
    written = {
        "delivery": {
            "shaping": {
                "default": {
                    "max_connections": 20,
                    "max_messages_per_second": None,
                    "max_messages_per_connection": 100,
                },
                "destinations": {
                    "gmail.com": {"max_connections": 10, "max_messages_per_second": 50},
                    "*.protection.outlook.com": {"max_connections": 8},
                },
            },
            "source_addresses": [
                {"address": "203.0.113.5", "ehlo": "mta0.example.com"},
                {"address": "203.0.113.10", "ehlo": "mta1.example.com", "classes": ["bulk"]},
                {
                    "address": "203.0.113.20",
                    "ehlo": "mta2.example.com",
                    "sender_domains": ["example.com"],
                },
            ],
        },
        "queue": {
            "classes": {"transactional": 10, "bulk": 1},
            "sender_classes": {"news.example.com": "bulk"},
        },
    }
    keys = (
        "delivery.shaping",
        "delivery.source_addresses",
        "queue.classes",
        "queue.sender_classes",
    )
    known = all(config_schema_has(key) for key in keys)
    values = tmp_path / "shaping.yaml"
    values.write_text(yaml.safe_dump({"config": written}))
    docs = render("default-values.yaml", values, schema=known)
    config = config_file(docs)
    assert config["delivery"] == written["delivery"]
    assert config["queue"] == written["queue"]
    if known:
        path = tmp_path / "mailyard.yaml"
        path.write_text(one(docs, "ConfigMap", "mx-mailyard-config")["data"]["mailyard.yaml"])
        load_settings(path)


def test_delivery_runs_on_the_node_network_only_when_asked() -> None:
    for _, spec in pod_specs(render("default-values.yaml")):
        assert "hostNetwork" not in spec
    docs = render(
        "default-values.yaml",
        settings=("delivery.hostNetwork=true", "delivery.podAntiAffinityPreset=hard"),
    )
    for name, deployment in deployments(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        if name == "delivery":
            kubernetes_validate.validate(deployment, KUBE_VERSION.rsplit(".", 1)[0], strict=True)
            assert spec["hostNetwork"] is True
            assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", "cluster DNS all the same"
            terms = spec["affinity"]["podAntiAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
        else:
            assert "hostNetwork" not in spec, name
    message = render_error("default-values.yaml", settings=("delivery.hostNetwork=true",))
    assert "delivery.hostNetwork: two delivery pods on one node would both bind its port 9102" in (
        message
    )


def test_without_keda_autoscaling_is_a_cpu_hpa() -> None:
    docs = render(
        "default-values.yaml",
        settings=("queue.autoscaling.enabled=true", "delivery.autoscaling.enabled=true"),
    )
    assert not find(docs, "ScaledObject")
    assert not find(docs, "TriggerAuthentication")
    hpas = {component(doc): doc for doc in find(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"queue", "delivery"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"mx-mailyard-{name}",
        }
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert "replicas" not in deployments(docs)[name]["spec"]


def test_no_autoscaling_by_default() -> None:
    docs = render("default-values.yaml")
    assert not find(docs, "HorizontalPodAutoscaler")
    assert not find(docs, "ScaledObject")
    replicas = {name: d["spec"]["replicas"] for name, d in deployments(docs).items()}
    assert replicas == {"ingress": 2, "queue": 2, "delivery": 2, "bounce": 1}


@scenarios
def test_every_component_has_a_disruption_budget(values: Path) -> None:
    docs = render(values)
    budgets = {component(doc): doc for doc in find(docs, "PodDisruptionBudget")}
    assert set(budgets) == set(COMPONENTS)
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector == deployments(docs)[name]["spec"]["selector"]["matchLabels"]


# --- network policies ---------------------------------------------------------


def selected_components(policy: Document) -> set[str]:
    """Which Mailyard components a NetworkPolicy's podSelector picks."""
    selector = policy["spec"]["podSelector"]
    chosen = set(COMPONENTS) | {"test"}
    if "app.kubernetes.io/component" in selector.get("matchLabels", {}):
        chosen &= {selector["matchLabels"]["app.kubernetes.io/component"]}
    for expression in selector.get("matchExpressions", []):
        assert expression["key"] == "app.kubernetes.io/component"
        assert expression["operator"] == "In"
        chosen &= set(expression["values"])
    return chosen


def egress_ports(docs: list[Document]) -> dict[str, set[tuple[str, int]]]:
    allowed: dict[str, set[tuple[str, int]]] = {name: set() for name in (*COMPONENTS, "test")}
    for policy in find(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            for name in selected_components(policy):
                allowed[name] |= {(p["protocol"], p["port"]) for p in rule.get("ports", [])}
    return allowed


@scenarios
def test_only_delivery_may_reach_the_smtp_port_outside(values: Path) -> None:
    docs = render(values)
    port = config_file(docs).get("delivery", {}).get("port", 25)
    allowed = egress_ports(docs)
    assert ("TCP", port) in allowed["delivery"]
    for name in ("ingress", "queue", "bounce", "test"):
        assert ("TCP", port) not in allowed[name], name
    for name in COMPONENTS:
        assert {("UDP", 53), ("TCP", 53), ("TCP", 5672)} <= allowed[name], name


def test_network_policies_default_deny_then_allow() -> None:
    docs = render("networkpolicy-values.yaml")
    policies = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    deny = policies["mx-mailyard-default-deny"]
    assert deny["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "mailyard", "app.kubernetes.io/instance": "mx"}
    }
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    smtp = policies["mx-mailyard-ingress-smtp"]
    assert smtp["ingress"] == [{"ports": [{"protocol": "TCP", "port": 2525}]}], "from anywhere"
    [metrics] = policies["mx-mailyard-metrics"]["ingress"]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9102}]
    assert metrics["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }
    broker, dns = policies["mx-mailyard-broker-dns"]["egress"]
    assert broker["ports"] == [{"protocol": "TCP", "port": 5672}]
    assert broker["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "messaging"
    }
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    [delivery] = policies["mx-mailyard-delivery-smtp"]["egress"]
    assert delivery["to"][0]["ipBlock"]["except"] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]


def test_delivery_egress_follows_the_destination_port() -> None:
    docs = render("default-values.yaml", settings=("config.delivery.port=2526",))
    allowed = egress_ports(docs)
    assert ("TCP", 2526) in allowed["delivery"]
    assert ("TCP", 25) not in allowed["delivery"]


def test_delivery_egress_opens_the_smarthost_port() -> None:
    allowed = egress_ports(render("outbound-values.yaml"))
    assert {("TCP", 25), ("TCP", 587)} <= allowed["delivery"]
    for name in ("ingress", "queue", "bounce", "test"):
        assert ("TCP", 587) not in allowed[name], name
    docs = render(
        "default-values.yaml",
        settings=("config.delivery.smarthost.host=relay.example.net",),
    )
    [rule] = one(docs, "NetworkPolicy", "mx-mailyard-delivery-smtp")["spec"]["egress"]
    assert rule["ports"] == [
        {"protocol": "TCP", "port": 25},  # a relay on port 25: no second SMTP port
        {"protocol": "TCP", "port": 443},  # MTA-STS
    ]


def test_delivery_egress_opens_https_for_mta_sts_while_it_is_on() -> None:
    assert ("TCP", 443) in egress_ports(render("default-values.yaml"))["delivery"]
    moved = render("default-values.yaml", settings=("config.delivery.mta_sts.https_port=8443",))
    assert ("TCP", 8443) in egress_ports(moved)["delivery"]
    assert ("TCP", 443) not in egress_ports(moved)["delivery"]
    off = render("default-values.yaml", settings=("config.delivery.mta_sts.enabled=false",))
    assert ("TCP", 443) not in egress_ports(off)["delivery"]
    for name in ("ingress", "queue"):
        assert ("TCP", 443) not in egress_ports(render("default-values.yaml"))[name], name
    # bounce reaches the API server on 443 (mailyard status), unless rbac is off.
    without_rbac = render("default-values.yaml", settings=("rbac.create=false",))
    assert ("TCP", 443) not in egress_ports(without_rbac)["bounce"]


def test_delivery_egress_opens_https_for_tls_reports_while_they_are_on() -> None:
    without_sts = ("config.delivery.mta_sts.enabled=false",)
    reporting = (
        *without_sts,
        "delivery.tlsrpt.enabled=true",
        "delivery.tlsrpt.organization=Example Inc.",
        "delivery.tlsrpt.contact=tlsrpt@example.com",
    )
    assert ("TCP", 443) not in egress_ports(render("default-values.yaml", settings=without_sts))[
        "delivery"
    ]
    allowed = egress_ports(render("default-values.yaml", settings=reporting))
    assert ("TCP", 443) in allowed["delivery"]
    for name in ("ingress", "queue"):  # bounce: the API server's 443, see below
        assert ("TCP", 443) not in allowed[name], name
    # Both on: one port, once.
    [rule] = one(render("outbound-values.yaml"), "NetworkPolicy", "mx-mailyard-delivery-smtp")[
        "spec"
    ]["egress"]
    assert [p["port"] for p in rule["ports"]].count(443) == 1


def test_tls_reports_are_written_into_the_config_with_its_other_keys() -> None:
    docs = render("outbound-values.yaml", settings=("config.delivery.tlsrpt.max_domains=500",))
    assert config_file(docs)["delivery"]["tlsrpt"] == {
        "enabled": True,
        "interval": "1d",
        "organization": "Example Inc.",
        "contact": "tlsrpt@example.com",
        "max_domains": 500,
    }
    assert "tlsrpt" not in config_file(render("default-values.yaml")).get("delivery", {})


def test_broker_egress_goes_to_the_chart_created_cluster() -> None:
    docs = render("rabbitmq-cluster-values.yaml")
    policy = one(docs, "NetworkPolicy", "mx-mailyard-broker-dns")
    assert policy["spec"]["egress"][0]["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mx-mailyard-rabbitmq"}}}
    ]


def test_network_policies_can_be_turned_off() -> None:
    assert not find(
        render("default-values.yaml", settings=("networkPolicy.enabled=false",)), "NetworkPolicy"
    )


# --- RBAC for mailyard status -------------------------------------------------

TOKEN_VOLUME = "serviceaccount-token"


def token_mounts(docs: list[Document]) -> dict[str, list[str]]:
    """Where each pod of the release mounts a projected ServiceAccount token."""
    found: dict[str, list[str]] = {}
    for where, spec in pod_specs(docs):
        projected = {
            v["name"]
            for v in spec.get("volumes", [])
            if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
        }
        found[where] = [
            m["mountPath"]
            for box in spec["containers"] + spec.get("initContainers", [])
            for m in box.get("volumeMounts", [])
            if m["name"] in projected
        ]
    return found


@scenarios
def test_the_status_role_reads_deployments_and_pods_and_nothing_else(values: Path) -> None:
    docs = render(values)
    role = one(docs, "Role", "mx-mailyard-status")
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = {
        (group, resource, tuple(sorted(rule["verbs"])))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("apps", "deployments", ("get", "list", "watch")),
        ("", "pods", ("get", "list", "watch")),
    }
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"]), (
        "no resourceNames, no nonResourceURLs"
    )
    assert not find(docs, "ClusterRole")
    assert not find(docs, "ClusterRoleBinding")
    binding = one(docs, "RoleBinding", "mx-mailyard-status")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "mx-mailyard-status",
    }
    accounts = {spec["serviceAccountName"] for _, spec in pod_specs(docs)}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE} for name in accounts
    ]


@scenarios
def test_only_bounce_carries_the_token_where_the_kubernetes_client_looks(values: Path) -> None:
    """status.read_cluster's load_incluster_config reads token and ca.crt from one
    directory, and status.py the namespace beside them: all three are in the volume."""
    from kubernetes.config import incluster_config

    from mailyard.status import IN_CLUSTER_NAMESPACE

    docs = render(values)
    directory = str(IN_CLUSTER_NAMESPACE.parent)
    assert os.path.dirname(incluster_config.SERVICE_TOKEN_FILENAME) == directory
    assert os.path.dirname(incluster_config.SERVICE_CERT_FILENAME) == directory
    mounts = token_mounts(docs)
    assert {where: paths for where, paths in mounts.items() if paths} == {
        "Deployment/mx-mailyard-bounce": [directory]
    }
    spec = deployments(docs)["bounce"]["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False, "the explicit volume, nothing more"
    [volume] = [v for v in spec["volumes"] if v["name"] == TOKEN_VOLUME]
    files = {}
    for source in volume["projected"]["sources"]:
        if "serviceAccountToken" in source:
            files[source["serviceAccountToken"]["path"]] = "token"
            assert "audience" not in source["serviceAccountToken"], "the API server's audience"
        for item in source.get("configMap", {}).get("items", []):
            files[item["path"]] = f"configMap {source['configMap']['name']} {item['key']}"
        for item in source.get("downwardAPI", {}).get("items", []):
            files[item["path"]] = item["fieldRef"]["fieldPath"]
    assert files == {
        os.path.basename(incluster_config.SERVICE_TOKEN_FILENAME): "token",
        os.path.basename(
            incluster_config.SERVICE_CERT_FILENAME
        ): "configMap kube-root-ca.crt ca.crt",
        IN_CLUSTER_NAMESPACE.name: "metadata.namespace",
    }
    for name, deployment in deployments(docs).items():
        assert env(deployment)["MAILYARD_CONFIG"]["value"] == "/etc/mailyard/mailyard.yaml", name


def test_bounce_may_reach_the_api_server_and_no_one_else_may() -> None:
    docs = render("default-values.yaml")
    policy = one(docs, "NetworkPolicy", "mx-mailyard-bounce-kube-api")
    assert selected_components(policy) == {"bounce"}
    [rule] = policy["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    assert "to" not in rule
    narrowed = render("networkpolicy-values.yaml")
    [rule] = one(narrowed, "NetworkPolicy", "mx-mailyard-bounce-kube-api")["spec"]["egress"]
    assert rule == {
        "ports": [{"protocol": "TCP", "port": 6443}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    for name in ("ingress", "queue", "delivery", "test"):
        assert ("TCP", 6443) not in egress_ports(docs)[name], name


def test_without_rbac_there_is_no_role_no_token_and_no_api_egress() -> None:
    docs = render("default-values.yaml", settings=("rbac.create=false",))
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not find(docs, kind), kind
    assert not any(token_mounts(docs).values())
    for _, spec in pod_specs(docs):
        assert TOKEN_VOLUME not in {v["name"] for v in spec["volumes"]}
    assert not find(docs, "NetworkPolicy", "mx-mailyard-bounce-kube-api")
    assert ("TCP", 6443) not in egress_ports(docs)["bounce"]


def test_rbac_binds_an_existing_service_account_but_never_default() -> None:
    docs = render(
        "default-values.yaml",
        settings=("serviceAccount.create=false", "serviceAccount.name=mail-apps"),
    )
    assert not find(docs, "ServiceAccount")
    binding = one(docs, "RoleBinding", "mx-mailyard-status")
    assert binding["subjects"][0]["name"] == "mail-apps"
    message = render_error("default-values.yaml", settings=("serviceAccount.create=false",))
    assert "rbac.create: the Role would be bound to the ServiceAccount `default`" in message
    assert not find(
        render(
            "default-values.yaml", settings=("serviceAccount.create=false", "rbac.create=false")
        ),
        "RoleBinding",
    )


# --- helm test, monitoring ----------------------------------------------------


def test_the_helm_test_hook_sends_a_probe_through_the_service() -> None:
    pod = one(render("default-values.yaml"), "Pod")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert pod["spec"]["restartPolicy"] == "Never"
    [box] = pod["spec"]["containers"]
    assert box["image"] == container(deployments(render("default-values.yaml"))["ingress"])["image"]
    assert box["args"] == [
        "probe",
        "--host",
        f"mx-mailyard-ingress.{NAMESPACE}.svc",
        "--port",
        "25",
        "--to",
        "postmaster@bounces.example.com",
    ]


def test_the_probe_recipient_can_be_given() -> None:
    docs = render(
        "default-values.yaml",
        settings=("config.ingress.local_domains=null", "tests.probeRecipient=probe@example.org"),
    )
    assert one(docs, "Pod")["spec"]["containers"][0]["args"][-1] == "probe@example.org"
    assert not find(render("default-values.yaml", settings=("tests.enabled=false",)), "Pod")


def test_pod_monitor_labels_targets_by_component() -> None:
    monitor = one(render("monitoring-values.yaml", api_versions=()), "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        "targetLabel": "component",
        "action": "replace",
    } in endpoint["relabelings"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    expression = monitor["spec"]["selector"]["matchExpressions"][0]
    assert expression["values"] == list(COMPONENTS)


def test_prometheus_objects_follow_the_api() -> None:
    without = render("default-values.yaml", api_versions=())
    assert not find(without, "PodMonitor")
    assert not find(without, "PrometheusRule")
    with_api = render("default-values.yaml", api_versions=("monitoring.coreos.com/v1",))
    assert find(with_api, "PodMonitor")
    assert find(with_api, "PrometheusRule")


def test_prometheus_rule_carries_the_rules_file() -> None:
    rule = one(render("monitoring-values.yaml", api_versions=()), "PrometheusRule")
    rules_file = yaml.safe_load((CHART / "alerts" / "mailyard.rules.yaml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"]


def test_the_hard_bounce_threshold_is_the_operators(tmp_path: Path) -> None:
    values = tmp_path / "threshold.yaml"
    values.write_text("monitoring:\n  prometheusRule:\n    hardBounceRate: 0.02\n")
    rule = one(render("monitoring-values.yaml", values, api_versions=()), "PrometheusRule")
    [alert] = [
        r
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if r.get("alert") == "MailyardBounceHardBounceRateHigh"
    ]
    assert ") > 0.02\n" in alert["expr"]
    assert "0.05" not in alert["expr"]
    assert "/monitoring/prometheusRule/hardBounceRate" in render_error(
        "monitoring-values.yaml", settings=("monitoring.prometheusRule.hardBounceRate=2",)
    )


def test_one_dashboard_configmap_per_dashboard_file() -> None:
    docs = render("monitoring-values.yaml")
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files
    configmaps = [
        doc for doc in find(docs, "ConfigMap") if "grafana_dashboard" in doc["metadata"]["labels"]
    ]
    assert len(configmaps) == len(files)
    for path, configmap in zip(
        files, sorted(configmaps, key=lambda d: d["metadata"]["name"]), strict=True
    ):
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["annotations"]["grafana_folder"] == "Mail"
        assert configmap["metadata"]["namespace"] == "monitoring"
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
