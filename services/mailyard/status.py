"""``mailyard status``: what an operator looks at first.

For each service: desired and ready replicas and container restarts (from
the Kubernetes API, in-cluster or through your kubeconfig), next to the
depth and consumer count of the queues it works from (from RabbitMQ):
delivery's are its lanes, ``delivery`` (transactional) and
``delivery.<class>`` for the other classes of ``queue.classes``.
On the embedded spool there is no cluster: the queues' depths are read from
the spool file, and whether ``mailyard all`` runs from its lock.
The summary and the tables are pure functions of what was read, so they are
tested without a cluster; reading is kept to the small functions at the
bottom.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailyard.broker import QueueState, broker_factory, is_embedded
from mailyard.config import TRANSACTIONAL, Settings

COMPONENTS = ("ingress", "queue", "delivery", "bounce")
# The queues each service consumes (ingress consumes none: it only publishes).
WORK_QUEUES: Mapping[str, tuple[str, ...]] = {
    "ingress": (),
    "queue": ("inbound", "deferred"),
    "delivery": ("delivery",),
    "bounce": ("bounce", "local"),
}
COMPONENT_LABEL = "app.kubernetes.io/component"


def work_queues(lanes: Sequence[str] = (TRANSACTIONAL,)) -> dict[str, tuple[str, ...]]:
    """WORK_QUEUES with the delivery role as its lanes (``queue.classes``, in order)."""
    delivery = tuple(
        "delivery" if lane == TRANSACTIONAL else f"delivery.{lane}"
        for lane in dict.fromkeys((TRANSACTIONAL, *lanes))
    )
    return {name: delivery if name == "delivery" else roles for name, roles in WORK_QUEUES.items()}


IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class ServiceState:
    component: str
    desired: int
    ready: int
    updated: int
    restarts: int


def summarize(deployments: Iterable[Any], pods: Iterable[Any]) -> list[ServiceState]:
    """Kubernetes Deployment and Pod objects → one row per Mailyard component."""
    restarts: dict[str, int] = {}
    for pod in pods:
        component = str((pod.metadata.labels or {}).get(COMPONENT_LABEL, ""))
        statuses = (pod.status and pod.status.container_statuses) or []
        restarts[component] = restarts.get(component, 0) + sum(s.restart_count for s in statuses)
    states = []
    for deployment in deployments:
        component = str((deployment.metadata.labels or {}).get(COMPONENT_LABEL, ""))
        if component not in COMPONENTS:
            continue
        status = deployment.status
        states.append(
            ServiceState(
                component=component,
                desired=deployment.spec.replicas or 0,
                ready=(status and status.ready_replicas) or 0,
                updated=(status and status.updated_replicas) or 0,
                restarts=restarts.get(component, 0),
            )
        )
    return sorted(states, key=lambda s: COMPONENTS.index(s.component))


def render(
    services: Sequence[ServiceState],
    queues: Mapping[str, QueueState] | None,
    *,
    broker_problem: str = "",
    lanes: Sequence[str] = (TRANSACTIONAL,),
) -> str:
    """The table, like kubectl's; queue columns show '?' when the broker was not reachable."""
    header = ("SERVICE", "READY", "UP-TO-DATE", "RESTARTS", "QUEUE", "MESSAGES", "CONSUMERS")
    rows: list[tuple[str, ...]] = [header]
    consumed = work_queues(lanes)
    for state in services:
        names = consumed[state.component] or ("-",)
        for index, name in enumerate(names):
            lead = (
                (
                    state.component,
                    f"{state.ready}/{state.desired}",
                    str(state.updated),
                    str(state.restarts),
                )
                if index == 0
                else ("", "", "", "")
            )
            rows.append((*lead, name, *_queue_cells(name, queues)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if not services:
        lines.append("(no Mailyard deployments found: check --namespace and --release)")
    if queues is None:
        lines.append(f"broker: not reachable ({broker_problem})")
    else:
        parking = queues.get("parking")
        retries = sorted(
            (name, q.messages) for name, q in queues.items() if name.startswith("retry.")
        )
        lines.append(
            f"parking: {parking.messages if parking else '?'} messages"
            + (
                "   waiting to retry: " + " ".join(f"{n[6:]}={m}" for n, m in retries)
                if retries
                else ""
            )
        )
    return "\n".join(lines)


def _queue_cells(name: str, queues: Mapping[str, QueueState] | None) -> tuple[str, str]:
    if name == "-":
        return "", ""
    if queues is None or name not in queues:
        return "?", "?"
    return str(queues[name].messages), str(queues[name].consumers)


def render_embedded(
    depths: Mapping[str, int],
    *,
    running: bool,
    spool: str,
    lanes: Sequence[str] = (TRANSACTIONAL,),
) -> str:
    """The embedded spool's queues, in flow order, like ``postqueue``'s summary."""
    rows = [("QUEUE", "MESSAGES")]
    order = [q for names in work_queues(lanes).values() for q in names]
    retries = sorted(name for name in depths if name.startswith("retry."))
    for name in [*order, *retries, "parking"]:
        rows.append((name, str(depths.get(name, 0))))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {count}" for name, count in rows]
    state = "running" if running else "not running"
    return "\n".join([f"embedded spool {spool}: mailyard all is {state}", *lines])


async def read_queues(settings: Settings) -> dict[str, QueueState]:
    """Depth and consumers of every Mailyard queue, from RabbitMQ."""
    broker = broker_factory(settings)("status")
    await broker.connect(attempts=1)
    try:
        return await broker.queue_states()
    finally:
        await broker.close()


def read_cluster(namespace: str | None, release: str | None) -> tuple[list[Any], list[Any], str]:
    """Mailyard's Deployments and Pods, in-cluster or through the kubeconfig."""
    from kubernetes import client, config  # the 'k8s' extra; only this command needs it

    try:
        config.load_incluster_config()
        namespace = namespace or IN_CLUSTER_NAMESPACE.read_text().strip()
    except config.ConfigException:
        config.load_kube_config()
        if namespace is None:
            _, context = config.list_kube_config_contexts()
            namespace = context.get("context", {}).get("namespace", "default")
    selector = "app.kubernetes.io/name=mailyard"
    if release:
        selector += f",app.kubernetes.io/instance={release}"
    apps, core = client.AppsV1Api(), client.CoreV1Api()
    deployments = apps.list_namespaced_deployment(namespace, label_selector=selector).items
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return deployments, pods, namespace


def embedded_status(settings: Settings) -> int:
    from mailyard.broker.embedded.spool import SpoolError, is_locked, read_depths

    directory = settings.broker.spool_dir
    try:
        depths = read_depths(directory)
    except (SpoolError, OSError) as exc:
        print(f"cannot read the embedded spool: {exc}")
        return 1
    print(
        render_embedded(
            depths,
            running=is_locked(directory),
            spool=str(directory),
            lanes=tuple(settings.queue.classes),
        )
    )
    return 0


def status(settings: Settings, namespace: str | None, release: str | None) -> int:
    if is_embedded(settings.broker):
        return embedded_status(settings)
    try:
        deployments, pods, namespace = read_cluster(namespace, release)
    except ImportError:
        print("mailyard status needs the kubernetes client: pip install 'mailyard[k8s]'")
        return 2
    except Exception as exc:  # no kubeconfig, no access: say which
        print(f"cannot read the cluster: {type(exc).__name__}: {exc}")
        return 1
    queues: dict[str, QueueState] | None
    problem = ""
    try:
        queues = asyncio.run(read_queues(settings))
    except Exception as exc:
        queues, problem = None, f"{type(exc).__name__}: {exc}"
    print(f"namespace {namespace}")
    lanes = tuple(settings.queue.classes)
    print(render(summarize(deployments, pods), queues, broker_problem=problem, lanes=lanes))
    return 0
