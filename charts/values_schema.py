"""Generate charts/mailyard/values.schema.json (``make chart-schema``).

The schema is strict (unknown keys are errors) and comes from two sources, so
that it never drifts from either:

- ``config`` is the app's own model, ``mailyard.config.Settings`` (pydantic,
  ``extra="forbid"``): ``helm install`` refuses a key the app would refuse.
- everything else is described below once per shape (the four components share
  one), with descriptions taken from the ``## @param`` comments of values.yaml.

``tests/chart/test_schema.py`` fails when the committed file is stale.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parent / "mailyard"
SCHEMA_PATH = CHART / "values.schema.json"
COMPONENTS = ("ingress", "queue", "delivery", "bounce")
KEDA_COMPONENTS = ("queue", "delivery")

Schema = dict[str, Any]

# Kubernetes shapes the chart passes through unchanged: the API server checks them.
ANY_OBJECT: Schema = {"type": "object"}
ANY_LIST: Schema = {"type": "array"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
QUANTITY: Schema = {"type": ["string", "number"]}
INT_OR_PERCENT: Schema = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+%?$"}]
}
# A key of a Secret or ConfigMap ("" is reported by validation.yaml, with advice).
SECRET_KEY: Schema = {"type": "string", "pattern": r"^[-._a-zA-Z0-9]{0,253}$"}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?([mM][sS]|[sSmMhHdDwW]))+$|^[0-9]+(\.[0-9]+)?$"


def integer(minimum: int | None = 0, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def obj(properties: dict[str, Schema], *, required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def enum(*values: Any) -> Schema:
    return {"enum": list(values)}


def optional_integer(minimum: int = 0) -> Schema:
    """An integer, or "" for "not set" (the chart's convention)."""
    return {"anyOf": [integer(minimum), {"type": "string", "maxLength": 0}]}


def duration() -> Schema:
    return {"type": ["string", "number"], "pattern": DURATION_PATTERN, "minimum": 0}


def probe() -> Schema:
    return obj(
        {
            "enabled": BOOLEAN,
            "initialDelaySeconds": integer(),
            "periodSeconds": integer(1),
            "timeoutSeconds": integer(1),
            "failureThreshold": integer(1),
            "successThreshold": integer(1),
        }
    )


def component(name: str) -> Schema:
    autoscaling = {
        "enabled": BOOLEAN,
        "minReplicas": integer(0 if name in KEDA_COMPONENTS else 1),
        "maxReplicas": integer(1),
        "targetCPUUtilizationPercentage": integer(0, 100),
        "targetMemoryUtilizationPercentage": integer(0, 100),
        "behavior": ANY_OBJECT,
    }
    properties: dict[str, Schema] = {
        "replicaCount": integer(0),
        "resources": ANY_OBJECT,
        "autoscaling": obj(autoscaling),
        "pdb": obj(
            {
                "enabled": BOOLEAN,
                "minAvailable": {"anyOf": [INT_OR_PERCENT, {"type": "string", "maxLength": 0}]},
                "maxUnavailable": INT_OR_PERCENT,
            }
        ),
        "shutdownGrace": {"anyOf": [duration(), {"type": "string", "maxLength": 0}]},
        "preStopSleepSeconds": integer(0, 3600),
        "terminationGracePeriodSeconds": optional_integer(),
        "readinessProbe": probe(),
        "livenessProbe": probe(),
        "updateStrategy": ANY_OBJECT,
        "podAntiAffinityPreset": enum("soft", "hard", ""),
        "affinity": ANY_OBJECT,
        "nodeSelector": {"type": "object", "additionalProperties": STRING},
        "tolerations": ANY_LIST,
        "topologySpreadConstraints": ANY_LIST,
        "priorityClassName": STRING,
        "podAnnotations": {"type": "object", "additionalProperties": STRING},
        "podLabels": {"type": "object", "additionalProperties": STRING},
        "extraEnv": ANY_LIST,
        "extraVolumes": ANY_LIST,
        "extraVolumeMounts": ANY_LIST,
    }
    if name in KEDA_COMPONENTS:
        properties["keda"] = obj(
            {
                "queueLength": integer(1),
                "activationQueueLength": integer(0),
                "pollingInterval": integer(1),
                "cooldownPeriod": integer(0),
            }
        )
    if name == "ingress":
        port = obj(
            {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "port": integer(1, 65535),
                "targetPort": integer(1, 65535),
                "nodePort": {"anyOf": [integer(30000, 32767), {"type": "null"}]},
            },
            required=("name", "port", "targetPort"),
        )
        properties["service"] = obj(
            {
                "type": enum("LoadBalancer", "NodePort", "ClusterIP"),
                "ports": {"type": "array", "items": port},
                "externalTrafficPolicy": enum("Local", "Cluster"),
                "loadBalancerClass": STRING,
                "loadBalancerIP": STRING,
                "loadBalancerSourceRanges": {"type": "array", "items": STRING},
                "annotations": {"type": "object", "additionalProperties": STRING},
                "labels": {"type": "object", "additionalProperties": STRING},
            }
        )
        properties["proxyProtocol"] = obj(
            {"enabled": BOOLEAN, "trustedNetworks": {"type": "array", "items": STRING}}
        )
    if name == "delivery":
        properties["smarthost"] = obj(
            {"existingSecret": STRING, "existingSecretKey": SECRET_KEY, "password": STRING}
        )
        properties["tlsCA"] = obj({"configMap": STRING, "secret": STRING, "key": SECRET_KEY})
        properties["dane"] = obj({"enabled": BOOLEAN})
        properties["hostNetwork"] = BOOLEAN
        # Written into config delivery.tlsrpt, which the app validates once more.
        properties["tlsrpt"] = obj(
            {"enabled": BOOLEAN, "interval": duration(), "organization": STRING, "contact": STRING}
        )
    return obj(properties)


def auth_users() -> Schema:
    """``auth.users``: the users file of ``ingress.auth.users_file``, as the chart writes it.

    The same shape as the app's users file (``mailyard/ingress/auth.py``); whether a
    password is a ``mailyard auth hash`` value is checked by validation.yaml, whose
    message never repeats it (it may be a plain-text password).
    """
    user = obj(
        {
            "password": {"type": "string", "minLength": 1},
            "sender_domains": {
                "anyOf": [
                    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                    {"type": "null"},
                ]
            },
            "class": {"type": ["string", "null"], "pattern": r"^[a-z0-9][a-z0-9_-]{0,62}$"},
        },
        required=("password",),
    )
    return {
        "type": "object",
        "propertyNames": {"pattern": r"^[^\s]{1,256}$"},
        "additionalProperties": user,
    }


def dkim_keys() -> Schema:
    """``dkim.keys``: one entry of the app's ``dkim.keys`` each, and the PEM file it names.

    Missing domains and selectors, a ``pem`` beside ``existingSecret`` and the map of
    file name → PEM of earlier charts (allowed here) are reported by validation.yaml,
    which says what to write instead.
    """
    key = obj(
        {
            "domain": STRING,
            "selector": {"type": ["string", "integer"]},
            "file": STRING,
            "pem": STRING,
        }
    )
    legacy = {"type": "object", "additionalProperties": STRING}
    return {"anyOf": [{"type": "array", "items": key}, legacy]}


def chart_values() -> Schema:
    string_map = {"type": "object", "additionalProperties": STRING}
    secret_file = obj({"enabled": BOOLEAN, "existingSecret": STRING})
    return obj(
        {
            "global": ANY_OBJECT,
            "nameOverride": STRING,
            "fullnameOverride": STRING,
            "commonLabels": string_map,
            "commonAnnotations": string_map,
            "image": obj(
                {
                    "registry": STRING,
                    "repository": {"type": "string", "minLength": 1},
                    "tag": {"type": ["string", "number"]},
                    "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
                    "pullPolicy": enum("Always", "IfNotPresent", "Never"),
                }
            ),
            "imagePullSecrets": {"type": "array", "items": STRING},
            "config": {"$ref": "#/$defs/Settings"},
            "podSecurityContext": ANY_OBJECT,
            "containerSecurityContext": ANY_OBJECT,
            "tmpDir": obj({"medium": enum("", "Memory"), "sizeLimit": QUANTITY}),
            "serviceAccount": obj(
                {
                    "create": BOOLEAN,
                    "name": STRING,
                    "annotations": string_map,
                    "automountServiceAccountToken": BOOLEAN,
                }
            ),
            "rbac": obj({"create": BOOLEAN}),
            "rabbitmq": obj(
                {
                    "external": obj(
                        {
                            "enabled": BOOLEAN,
                            "url": STRING,
                            "existingSecret": STRING,
                            "existingSecretKey": STRING,
                        }
                    ),
                    "cluster": obj(
                        {
                            "enabled": BOOLEAN,
                            "name": {"type": "string", "maxLength": 52},
                            "replicas": integer(1),
                            "image": STRING,
                            "maxMessageSize": integer(1, 536_870_912),
                            "persistence": obj({"storageClassName": STRING, "storage": QUANTITY}),
                            "resources": ANY_OBJECT,
                            "additionalConfig": STRING,
                            "additionalPlugins": {"type": "array", "items": STRING},
                        }
                    ),
                }
            ),
            "keda": obj({"enabled": BOOLEAN}),
            "tls": obj({**secret_file["properties"], "cert": STRING, "key": STRING}),
            "dkim": obj({**secret_file["properties"], "keys": dkim_keys()}),
            "verp": obj(
                {**secret_file["properties"], "existingSecretKey": SECRET_KEY, "secret": STRING}
            ),
            "auth": obj({**secret_file["properties"], "users": auth_users()}),
            **{name: component(name) for name in COMPONENTS},
            "networkPolicy": obj(
                {
                    "enabled": BOOLEAN,
                    "metrics": obj({"namespaceSelector": ANY_OBJECT, "podSelector": ANY_OBJECT}),
                    "broker": obj(
                        {
                            "ports": {"type": "array", "items": integer(1, 65535), "minItems": 1},
                            "to": ANY_LIST,
                        }
                    ),
                    "dns": obj({"to": ANY_LIST}),
                    "delivery": obj({"to": ANY_LIST}),
                    "kubernetesApi": obj(
                        {
                            "ports": {"type": "array", "items": integer(1, 65535), "minItems": 1},
                            "to": ANY_LIST,
                        }
                    ),
                    "extraIngress": ANY_LIST,
                    "extraEgress": ANY_LIST,
                }
            ),
            "monitoring": obj(
                {
                    "podMonitor": obj(
                        {
                            "enabled": BOOLEAN,
                            "force": BOOLEAN,
                            "interval": STRING,
                            "scrapeTimeout": STRING,
                            "labels": string_map,
                            "relabelings": ANY_LIST,
                            "metricRelabelings": ANY_LIST,
                        }
                    ),
                    "prometheusRule": obj(
                        {
                            "enabled": BOOLEAN,
                            "force": BOOLEAN,
                            "labels": string_map,
                            "hardBounceRate": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 1,
                            },
                        }
                    ),
                    "grafanaDashboards": obj(
                        {
                            "enabled": BOOLEAN,
                            "label": {"type": "string", "minLength": 1},
                            "labelValue": STRING,
                            "folderAnnotation": {"type": "string", "minLength": 1},
                            "folder": STRING,
                            "namespace": STRING,
                            "labels": string_map,
                        }
                    ),
                }
            ),
            "tests": obj({"enabled": BOOLEAN, "probeRecipient": STRING, "resources": ANY_OBJECT}),
        }
    )


# Keys the app no longer has (definition → key → where it went). The schema still
# lets them through, so that templates/validation.yaml, rather than a bare
# "additional property" error, tells the user where each one went.
MOVED_CONFIG_KEYS: dict[str, dict[str, str]] = {
    "DeliveryConfig": {
        "max_connections_per_destination": "delivery.shaping.default.max_connections",
        "max_messages_per_connection": "delivery.shaping.default.max_messages_per_connection",
    },
}


def config_definitions() -> dict[str, Schema]:
    """The app's Settings model as JSON schema definitions, in the forms people write."""
    sys.path.insert(0, str(CHART.parents[1] / "services"))
    from pydantic import TypeAdapter

    from mailyard.config import Settings
    from mailyard.durations import format_duration

    model = Settings.model_json_schema()
    definitions: dict[str, Schema] = model.pop("$defs")
    definitions["Settings"] = model
    as_timedelta = TypeAdapter(timedelta)

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: rewrite(value) for key, value in node.items() if key != "title"}
        if node.get("format") == "duration":
            # The app takes "90s", "5m", "1h30m" or seconds, not ISO 8601.
            default = node.get("default")
            node = duration()
            if default is not None:
                node["default"] = format_duration(as_timedelta.validate_python(default))
        elif node.get("format", "").startswith("ipv"):
            del node["format"]  # a pydantic name, not a JSON schema format
        return node

    definitions = {name: rewrite(schema) for name, schema in definitions.items()}
    for name, moved in MOVED_CONFIG_KEYS.items():
        properties = definitions[name]["properties"]
        defaults = definitions["Settings"]["properties"]
        for key, target in moved.items():
            properties[key] = {
                "description": f"Removed: set {target} (the chart refuses this key and says so)"
            }
        # The defaults shown for the section must not advertise the removed keys.
        for section in defaults.values():
            if section.get("$ref") == f"#/$defs/{name}" and isinstance(
                section.get("default"), dict
            ):
                for key in moved:
                    section["default"].pop(key, None)
    # Required by the app, but reported (with advice) by the chart's validation.yaml.
    definitions["Settings"]["properties"]["hostname"].pop("minLength", None)
    definitions["Settings"]["description"] = (
        "Mailyard's configuration file (services/mailyard/config.py); "
        "broker.url comes from a Secret instead"
    )
    return definitions


def descriptions() -> dict[str, str]:
    """`## @param path text` comments of values.yaml."""
    found = {}
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"\s*## @param (\S+) (.+)", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def describe(schema: Schema, texts: dict[str, str], path: str = "") -> None:
    properties = schema.get("properties", {})
    for key, child in properties.items():
        child_path = f"{path}.{key}" if path else key
        # A copy: shapes such as STRING are shared, and each value gets its own text.
        child = properties[key] = dict(child)
        if child_path in texts and "$ref" not in child:
            child["description"] = texts[child_path]
        describe(child, texts, child_path)


def build() -> Schema:
    schema = chart_values()
    describe(schema, descriptions())
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Mailyard Helm chart values",
        "description": "Generated by charts/values_schema.py (make chart-schema); do not edit.",
        **schema,
        "$defs": config_definitions(),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
