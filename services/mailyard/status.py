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
from mailyard.v1 import members_pb2 as mpb

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
    lines = columns(rows)
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


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns two spaces apart, as kubectl prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


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
    queues, _ = await read_broker(settings, listen=0.0)
    return queues


async def read_broker(
    settings: Settings, *, listen: float
) -> tuple[dict[str, QueueState], list[mpb.Heartbeat]]:
    """The queues, and the delivery processes' heartbeats heard within ``listen`` s."""
    broker = broker_factory(settings)("status")
    await broker.connect(attempts=1)
    try:
        queues = await broker.queue_states()
        beats = await broker.heartbeats(listen) if listen > 0 else []
        return queues, beats
    finally:
        await broker.close()


def render_shaping(beats: Sequence[mpb.Heartbeat]) -> str:
    """Each destination's effective limits, as the delivery processes report them.

    The limits are the cluster's after backoff (each process backs off on
    what it hears, so they can differ: the lowest is shown); sessions and
    waiting jobs are the sum over the processes.
    """
    if not beats:
        return "delivery: no heartbeats heard (is a delivery process running?)"
    seen: dict[str, list[mpb.DestinationState]] = {}
    for beat in beats:
        for state in beat.destinations:
            seen.setdefault(state.key, []).append(state)
    hosts = ", ".join(beat.hostname or beat.member for beat in beats)
    lines = [f"delivery: {len(beats)} processes share the destinations' limits ({hosts})"]
    if not seen:
        return "\n".join(lines)
    header = ("DESTINATION", "CONNECTIONS", "MSG/S", "BACKOFF", "PAUSED", "SESSIONS", "WAITING")
    rows: list[tuple[str, ...]] = [header]
    for key in sorted(seen, key=lambda k: -sum(s.sessions + s.waiting for s in seen[k])):
        states = seen[key]
        connections = min(s.max_connections for s in states)
        rate = min(s.max_messages_per_second for s in states)
        paused = max(s.paused_for for s in states)
        rows.append(
            (
                key,
                str(connections) if connections else "-",
                f"{rate:g}" if rate else "-",
                f"{min(s.backoff_factor for s in states):g}",
                f"{paused:.0f}s" if paused else "no",
                str(sum(s.sessions for s in states)),
                str(sum(s.waiting for s in states)),
            )
        )
    lines += columns(rows)
    return "\n".join(lines)


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
    code = 0
    deployments: list[Any] = []
    pods: list[Any] = []
    try:
        deployments, pods, namespace = read_cluster(namespace, release)
        print(f"namespace {namespace}")
    except ImportError:
        print("mailyard status needs the kubernetes client: pip install 'mailyard[k8s]'")
        return 2
    except Exception as exc:  # no kubeconfig, no access: say which, and show the broker's side
        print(f"cannot read the cluster: {type(exc).__name__}: {exc}")
        code = 1
    queues: dict[str, QueueState] | None
    beats: list[mpb.Heartbeat] = []
    problem = ""
    # Three heartbeats' time: every live delivery process is heard at least twice.
    listen = 3 * settings.delivery.shaping.heartbeat_interval.total_seconds()
    try:
        queues, beats = asyncio.run(read_broker(settings, listen=listen))
    except Exception as exc:
        queues, problem = None, f"{type(exc).__name__}: {exc}"
    lanes = tuple(settings.queue.classes)
    print(render(summarize(deployments, pods), queues, broker_problem=problem, lanes=lanes))
    if queues is not None:
        print()
        print(render_shaping(beats))
    return code
