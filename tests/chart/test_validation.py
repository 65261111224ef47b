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
        "delivery": {
            "nameservers": ["10.96.0.10:5353"],
            "smarthost": {"host": "relay.example.net", "username": "mailyard"},
            "dane": {"enabled": True},
            "max_connections_per_destination": 10,
        },
    },
    "rabbitmq": {"external": {"enabled": True, "url": "", "existingSecret": ""}},
    "keda": {"enabled": True},
    "ingress": {
        "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
        "service": {"ports": [{"name": "smtp", "port": 25, "targetPort": 2600}]},
    },
    "queue": {"pdb": {"minAvailable": 2}},
    "delivery": {
        "terminationGracePeriodSeconds": 10,
        "tlsCA": {"configMap": "trust-bundle", "secret": "ca"},
        "tlsrpt": {"enabled": True, "organization": "Example Inc."},
    },
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
    "config.delivery.max_connections_per_destination: removed; set "
    "config.delivery.shaping.default.max_connections",
    "config.ingress.proxy_protocol.enabled: set ingress.proxyProtocol.enabled instead",
    "ingress.service.ports: smtp targets port 2600, where ingress does not listen",
    "ingress.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
    "queue.pdb.minAvailable: 2 with as few as 1 pod(s) would block every node drain",
    "delivery.terminationGracePeriodSeconds: 10 is shorter than preStopSleepSeconds + the "
    "shutdown grace (30 s)",
    "bounce.pdb.maxUnavailable: 0 would block every node drain",
    "tls: enabled, but neither existingSecret nor both cert and key are set",
    "dkim: enabled, but keys is empty",
    "auth: enabled, but neither existingSecret nor users are set",
    "config.delivery.smarthost.username: mailyard, but there is no password",
    "delivery.tlsCA: configMap and secret are both set",
    "config.delivery.dane.enabled: set delivery.dane.enabled instead",
    "delivery.tlsrpt: enabled, but contact is empty",
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


def test_the_schema_knows_the_suppression_keys() -> None:
    message = render_error(
        "default-values.yaml",
        settings=(
            "config.suppression.hard_bounce_expiry=forever",
            "config.suppression.expired_strikes=-1",
            "config.suppression.strikes=3",
        ),
    )
    assert "/config/suppression/hard_bounce_expiry" in message
    assert "/config/suppression/expired_strikes" in message
    assert "additional properties 'strikes' not allowed" in message


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


# --- DKIM, the smarthost's password, the CA bundle -----------------------------

DKIM_PEM = "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n"


def test_dkim_keys_from_earlier_charts_say_how_to_list_them() -> None:
    """The map of file name → PEM named no domain or selector: nothing would sign."""
    message = render_error(
        "default-values.yaml",
        settings=("dkim.enabled=true", f"dkim.keys.example\\.com\\.s1\\.pem={DKIM_PEM}"),
    )
    assert problems(message) == [
        "dkim.keys: a map of file name → PEM (example.com.s1.pem), as earlier charts took it, "
        "names no domain or selector, so queue would sign nothing; make it a list: keys: "
        "[{domain: example.com, selector: s1, file: <the file name>, pem: <the PEM, unless "
        "existingSecret holds it>}]"
    ]
    assert "not a real key" not in message
    # Enabled with neither form: the same advice as with an empty list.
    empty = problems(render_error("existing-secrets-values.yaml", settings=("dkim.keys=null",)))
    assert [line.split(";")[0] for line in empty] == ["dkim: enabled, but keys is empty"]


def test_a_dkim_key_needs_a_domain_a_selector_and_a_file_name(tmp_path: Path) -> None:
    keys = [
        {"selector": "s1", "file": "a.pem", "pem": DKIM_PEM},
        {"domain": "example.com", "file": "b.pem", "pem": DKIM_PEM},
        {"domain": "example.com", "selector": "s1", "file": "keys/c.pem", "pem": DKIM_PEM},
    ]
    values = {"dkim": {"enabled": True, "keys": keys}}
    message = render_error("default-values.yaml", write(tmp_path, values))
    assert problems(message) == [
        "dkim.keys[0].domain: required; the signing domain (d=), e.g. example.com, which also "
        "signs mail from the names below it",
        "dkim.keys[1].selector: required; the selector (s=) whose public key is published at "
        "<selector>._domainkey.<domain>",
        "dkim.keys[2].file: \"keys/c.pem\" is not a Secret key (letters, digits, '-', '_' and '.')",
    ]


def test_one_selector_of_a_domain_is_one_key(tmp_path: Path) -> None:
    keys = [
        {"domain": "example.com", "selector": "s1", "pem": DKIM_PEM},
        {"domain": "Example.COM", "selector": "S1", "file": "other.pem", "pem": DKIM_PEM},
        {"domain": "example.com", "selector": "s2", "pem": DKIM_PEM},
    ]
    message = render_error(
        "default-values.yaml", write(tmp_path, {"dkim": {"enabled": True, "keys": keys}})
    )
    assert problems(message) == [
        "dkim.keys[1]: selector S1 of Example.COM is also dkim.keys[0]; one selector publishes "
        "one public key (queue would refuse to start)"
    ]


def test_dkim_pems_come_from_the_values_or_from_existing_secret_never_both(tmp_path: Path) -> None:
    """The message names the file, never the private key."""
    secret = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIsecret\n-----END PRIVATE KEY-----\n"
    both = render_error(
        "existing-secrets-values.yaml",
        write(
            tmp_path,
            {"dkim": {"keys": [{"domain": "example.com", "selector": "s1", "pem": secret}]}},
        ),
    )
    assert problems(both) == [
        "dkim.keys[0].pem: given together with dkim.existingSecret, whose example.com.s1.pem "
        "is the file queue reads; remove pem, or remove existingSecret to let the chart "
        "create the Secret"
    ]
    assert "MC4CAQAw" not in both
    neither = render_error(
        "default-values.yaml",
        settings=(
            "dkim.enabled=true",
            "dkim.keys[0].domain=example.com",
            "dkim.keys[0].selector=s1",
        ),
    )
    assert problems(neither) == [
        "dkim.keys[0].pem: required, since the chart creates the Secret (no dkim.existingSecret); "
        "or put the file example.com.s1.pem in a Secret of your own and set dkim.existingSecret"
    ]


def test_keys_that_share_a_file_share_its_pem(tmp_path: Path) -> None:
    keys = [
        {"domain": "example.com", "selector": "s1", "file": "shared.pem", "pem": DKIM_PEM},
        {"domain": "example.org", "selector": "s1", "file": "shared.pem", "pem": DKIM_PEM},
        {"domain": "example.net", "selector": "s1", "file": "shared.pem", "pem": "other\n"},
    ]
    message = render_error(
        "default-values.yaml", write(tmp_path, {"dkim": {"enabled": True, "keys": keys}})
    )
    assert problems(message) == [
        "dkim.keys[2].pem: another key of dkim.keys has the file shared.pem with a different "
        "PEM; give each PEM its own file"
    ]


def test_the_chart_owns_config_dkim_keys_when_dkim_is_enabled() -> None:
    own = (
        "config.dkim.keys[0].domain=example.com",
        "config.dkim.keys[0].selector=s1",
        "config.dkim.keys[0].key_file=/etc/keys/example.com.pem",
    )
    message = render_error("existing-secrets-values.yaml", settings=own)
    assert [line.split(":")[0] for line in problems(message)] == ["config.dkim.keys"]
    # With dkim off, your own files (mounted with queue.extraVolumes) are yours to name.
    docs = render("default-values.yaml", settings=own)
    [configmap] = [d for d in docs if d["metadata"]["name"] == "mx-mailyard-config"]
    assert yaml.safe_load(configmap["data"]["mailyard.yaml"])["dkim"] == {
        "keys": [
            {"domain": "example.com", "selector": "s1", "key_file": "/etc/keys/example.com.pem"}
        ]
    }


def test_dkim_keys_have_the_chart_s_shape() -> None:
    """`key_file` is the app's name; in the chart's values the Secret's file is `file`."""
    message = render_error(
        "default-values.yaml",
        settings=("dkim.enabled=true", "dkim.keys[0].key_file=/etc/keys/a.pem"),
    )
    assert "additional properties 'key_file' not allowed" in message


RELAY = (
    "config.delivery.smarthost.host=smtp.relay.example.net",
    "config.delivery.smarthost.port=587",
    "config.delivery.smarthost.tls=verify",
)


def test_a_relay_login_needs_a_username_and_a_password() -> None:
    no_password = render_error(
        "default-values.yaml", settings=(*RELAY, "config.delivery.smarthost.username=mailyard")
    )
    assert problems(no_password) == [
        "config.delivery.smarthost.username: mailyard, but there is no password; set "
        "delivery.smarthost.existingSecret (a Secret with the password under existingSecretKey) "
        "or delivery.smarthost.password"
    ]
    no_username = render_error(
        "default-values.yaml", settings=(*RELAY, "delivery.smarthost.existingSecret=relay")
    )
    assert problems(no_username) == [
        "config.delivery.smarthost.username: empty, but a password is given (delivery.smarthost "
        "or password_file); the relay needs both or neither (delivery would refuse to start)"
    ]
    no_relay = render_error(
        "default-values.yaml", settings=("delivery.smarthost.existingSecret=relay",)
    )
    assert problems(no_relay) == [
        "delivery.smarthost: a password is given, but there is no config.delivery.smarthost to "
        "use it; set config.delivery.smarthost (host, port, tls: verify, username), or remove "
        "the password"
    ]
    # Your own password file (mounted with delivery.extraVolumes) is a password too.
    docs = render(
        "default-values.yaml",
        settings=(
            *RELAY,
            "config.delivery.smarthost.username=mailyard",
            "config.delivery.smarthost.password_file=/etc/relay/password",
        ),
    )
    [configmap] = [d for d in docs if d["metadata"]["name"] == "mx-mailyard-config"]
    relay = yaml.safe_load(configmap["data"]["mailyard.yaml"])["delivery"]["smarthost"]
    assert relay["password_file"] == "/etc/relay/password"


def test_the_relay_password_comes_from_one_place_and_is_never_repeated() -> None:
    secret = "hunter2-relay-password"
    message = render_error(
        "existing-secrets-values.yaml",
        settings=(
            f"delivery.smarthost.password={secret}",
            "delivery.smarthost.existingSecretKey=",
            "config.delivery.smarthost.password_file=/etc/relay/password",
        ),
    )
    assert problems(message) == [
        "delivery.smarthost: password and existingSecret are both set; keep one (existingSecret "
        "keeps the password out of your values)",
        "delivery.smarthost.existingSecretKey: the key of the password in existingSecret is empty",
        "config.delivery.smarthost.password_file: the chart writes it from delivery.smarthost "
        "(the Secret's file under /etc/mailyard/smarthost); remove it, or unset "
        "delivery.smarthost.existingSecret and password and mount your own file with "
        "delivery.extraVolumes",
    ]
    assert secret not in message


def test_the_ca_bundle_comes_from_one_place() -> None:
    message = render_error(
        "existing-secrets-values.yaml",
        settings=(
            "delivery.tlsCA.secret=partner-ca",
            "delivery.tlsCA.key=",
            "config.delivery.tls_ca_file=/etc/ca/bundle.pem",
        ),
    )
    assert problems(message) == [
        "delivery.tlsCA: configMap and secret are both set; keep one",
        "delivery.tlsCA.key: empty; the key of the PEM bundle in the ConfigMap or Secret "
        "(e.g. ca.crt)",
        "config.delivery.tls_ca_file: the chart writes it from delivery.tlsCA (the bundle under "
        "/etc/mailyard/delivery-ca); remove it, or unset delivery.tlsCA and mount your own file "
        "with delivery.extraVolumes",
    ]
    # Without delivery.tlsCA, your own bundle (mounted with delivery.extraVolumes) is yours.
    docs = render("default-values.yaml", settings=("config.delivery.tls_ca_file=/etc/ca/b.pem",))
    [configmap] = [d for d in docs if d["metadata"]["name"] == "mx-mailyard-config"]
    delivery = yaml.safe_load(configmap["data"]["mailyard.yaml"])["delivery"]
    assert delivery["tls_ca_file"] == "/etc/ca/b.pem"


def test_dane_needs_a_resolver_of_its_own() -> None:
    """The cluster DNS does not validate DNSSEC: DANE through it would never apply."""
    message = render_error("default-values.yaml", settings=("delivery.dane.enabled=true",))
    assert problems(message) == [
        "delivery.dane.enabled: DANE needs a DNSSEC-validating resolver; name it in "
        "config.delivery.nameservers (the cluster DNS does not validate, so DANE would never "
        "apply)"
    ]
    render(
        "default-values.yaml",
        settings=("delivery.dane.enabled=true", "config.delivery.nameservers[0]=10.96.0.53"),
    )


def test_tls_reports_name_their_sender_and_come_from_one_place() -> None:
    message = render_error("default-values.yaml", settings=("delivery.tlsrpt.enabled=true",))
    assert problems(message) == [
        "delivery.tlsrpt: enabled, but organization and contact are empty; a report names who "
        "sends it (organization, e.g. Example Inc.) and an address to write to (contact, e.g. "
        "tlsrpt@example.com, whose domain a dkim key should cover: receivers ignore unsigned "
        "reports)"
    ]
    message = render_error(
        "outbound-values.yaml", settings=("config.delivery.tlsrpt.contact=other@example.com",)
    )
    assert problems(message) == [
        "config.delivery.tlsrpt.contact: set delivery.tlsrpt.contact instead (the chart writes "
        "this key from it)"
    ]
    message = render_error("default-values.yaml", settings=("config.delivery.tlsrpt.enabled=true",))
    assert problems(message) == [
        "config.delivery.tlsrpt.enabled: set delivery.tlsrpt.enabled instead (the chart writes "
        "this key from it)"
    ]


def test_the_schema_knows_the_tls_report_values() -> None:
    message = render_error("default-values.yaml", settings=("delivery.tlsrpt.interval=daily",))
    assert "delivery.tlsrpt.interval" in message or "/delivery/tlsrpt/interval" in message


def test_the_return_path_domain_is_a_local_domain_with_a_secret(tmp_path: Path) -> None:
    message = render_error(
        "default-values.yaml",
        settings=("config.bounce.return_path_domain=bounces.example.org",),
    )
    assert [line.split(":")[0] for line in problems(message)] == [
        "config.bounce.return_path_domain",
        "config.bounce.return_path_domain",
    ]
    assert "bounces.example.org must be one of config.ingress.local_domains" in message
    assert "there is no VERP secret; turn verp.enabled on" in message
    # Case does not matter, as for the app.
    render(
        "default-values.yaml",
        settings=(
            "config.bounce.return_path_domain=Bounces.Example.COM",
            "verp.enabled=true",
            "verp.existingSecret=mine",
        ),
    )


def test_verp_needs_a_domain_and_one_long_enough_secret_never_repeated() -> None:
    message = render_error(
        "default-values.yaml", settings=("verp.enabled=true", "verp.secret=tooshort-secret")
    )
    assert [line.split(":")[0] for line in problems(message)] == ["verp", "verp.secret"]
    assert "its first line has 15 bytes; a VERP secret needs at least 16" in message
    assert "tooshort-secret" not in message
    message = render_error(
        "default-values.yaml",
        settings=(
            "config.bounce.return_path_domain=bounces.example.com",
            "config.bounce.verp_secret_file=/mine",
            "verp.enabled=true",
            "verp.existingSecret=a",
            "verp.secret=0123456789abcdef",
        ),
    )
    assert [line.split(":")[0] for line in problems(message)] == [
        "verp",
        "config.bounce.verp_secret_file",
    ]


def test_the_limits_of_earlier_versions_say_where_they_went(tmp_path: Path) -> None:
    """delivery.max_connections_per_destination and max_messages_per_connection are
    delivery.shaping.default's now: the schema lets them through so that validation,
    not a bare "additional property" error, names the new place."""
    values = {
        "config": {
            "hostname": "mx.example.com",
            "delivery": {"max_connections_per_destination": 5, "max_messages_per_connection": 50},
        },
        "rabbitmq": {"external": {"url": "amqp://h/"}},
        "tests": {"enabled": False},
        "delivery": {
            "extraEnv": [
                {"name": "MAILYARD_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION", "value": "5"}
            ]
        },
    }
    found = problems(render_error(write(tmp_path, values)))
    assert found == [
        "config.delivery.max_connections_per_destination: removed; set "
        "config.delivery.shaping.default.max_connections (the limit now holds for all delivery "
        "pods together; one destination's own: "
        "config.delivery.shaping.destinations.<domain>.max_connections)",
        "delivery.extraEnv: MAILYARD_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION was "
        "config.delivery.max_connections_per_destination, which is removed; set "
        "config.delivery.shaping.default.max_connections (the limit now holds for all delivery "
        "pods together; one destination's own: "
        "config.delivery.shaping.destinations.<domain>.max_connections)",
        "config.delivery.max_messages_per_connection: removed; set "
        "config.delivery.shaping.default.max_messages_per_connection (one destination's own: "
        "config.delivery.shaping.destinations.<domain>.max_messages_per_connection)",
    ]
    # The chart itself sets neither, in any scenario.
    for scenario in (Path(__file__).parents[2] / "charts" / "mailyard" / "ci").glob("*.yaml"):
        text = scenario.read_text()
        assert "max_connections_per_destination" not in text, scenario.name
        assert "max_messages_per_connection" not in text, scenario.name
