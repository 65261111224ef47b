"""mailyard status: summarising Kubernetes objects and drawing the table (no cluster)."""

from kubernetes.client import (
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodStatus,
    V1PodTemplateSpec,
)

from mailyard.broker import QueueState
from mailyard.status import ServiceState, render, render_embedded, summarize


def deployment(component, desired, ready, updated=None):
    labels = {"app.kubernetes.io/name": "mailyard", "app.kubernetes.io/component": component}
    return V1Deployment(
        metadata=V1ObjectMeta(name=f"mailyard-{component}", labels=labels),
        spec=V1DeploymentSpec(
            replicas=desired,
            selector=V1LabelSelector(match_labels=labels),
            template=V1PodTemplateSpec(),
        ),
        status=V1DeploymentStatus(
            ready_replicas=ready, updated_replicas=desired if updated is None else updated
        ),
    )


def pod(component, *restarts):
    return V1Pod(
        metadata=V1ObjectMeta(labels={"app.kubernetes.io/component": component}),
        status=V1PodStatus(
            container_statuses=[
                V1ContainerStatus(
                    name="mailyard", image="x", image_id="x", ready=True, restart_count=n
                )
                for n in restarts
            ]
        ),
    )


def test_summary_per_component_in_flow_order():
    states = summarize(
        [deployment("delivery", 4, 3), deployment("ingress", 2, 2), deployment("other", 1, 1)],
        [pod("delivery", 1), pod("delivery", 2, 1), pod("ingress", 0), pod("ingress")],
    )
    assert states == [
        ServiceState("ingress", desired=2, ready=2, updated=2, restarts=0),
        ServiceState("delivery", desired=4, ready=3, updated=4, restarts=4),
    ]


def test_ready_replicas_absent_means_zero():
    # A Deployment with no ready pod has status.ready_replicas = None.
    [state] = summarize([deployment("queue", 2, None, updated=None)], [])
    assert (state.ready, state.desired) == (0, 2)


def test_table_puts_queues_next_to_their_consumers():
    services = [
        ServiceState("ingress", 2, 2, 2, 0),
        ServiceState("queue", 2, 1, 2, 3),
        ServiceState("delivery", 4, 4, 4, 0),
    ]
    queues = {
        "inbound": QueueState(12, 2),
        "deferred": QueueState(0, 2),
        "delivery": QueueState(1830, 4),
        "parking": QueueState(1, 0),
        "retry.5m": QueueState(7, 0),
    }
    lines = render(services, queues).splitlines()
    assert lines[0].split() == [
        "SERVICE", "READY", "UP-TO-DATE", "RESTARTS", "QUEUE", "MESSAGES", "CONSUMERS",
    ]  # fmt: skip
    assert lines[1].split() == ["ingress", "2/2", "2", "0", "-"]
    assert lines[2].split() == ["queue", "1/2", "2", "3", "inbound", "12", "2"]
    assert lines[3].split() == ["deferred", "0", "2"]
    assert lines[4].split() == ["delivery", "4/4", "4", "0", "delivery", "1830", "4"]
    assert lines[-1] == "parking: 1 messages   waiting to retry: 5m=7"
    # Columns line up: every queue name starts at the same offset.
    assert lines[2].index("inbound") == lines[3].index("deferred") == lines[4].rindex("delivery")


def test_delivery_s_queues_are_its_lanes():
    services = [ServiceState("delivery", 2, 2, 2, 0), ServiceState("bounce", 1, 1, 1, 0)]
    queues = {
        "delivery": QueueState(3, 2),
        "delivery.bulk": QueueState(4000, 2),
        "retry.5m": QueueState(1, 0),
        "retry.5m.bulk": QueueState(20, 0),
        "parking": QueueState(0, 0),
    }
    lines = render(services, queues, lanes=("transactional", "bulk", "news")).splitlines()
    assert [line.split() for line in lines[1:4]] == [
        ["delivery", "2/2", "2", "0", "delivery", "3", "2"],
        ["delivery.bulk", "4000", "2"],
        ["delivery.news", "?", "?"],  # not declared yet: no process with the new class ran
    ]
    assert lines[-1] == "parking: 0 messages   waiting to retry: 5m=1 5m.bulk=20"


def test_table_without_broker_says_why():
    table = render([ServiceState("bounce", 1, 1, 1, 0)], None, broker_problem="refused")
    assert table.splitlines()[1].split() == ["bounce", "1/1", "1", "0", "bounce", "?", "?"]
    assert table.splitlines()[-1] == "broker: not reachable (refused)"


def test_no_deployments_found_is_said():
    assert "no Mailyard deployments found" in render([], {})


def test_embedded_table_lists_every_queue_in_flow_order():
    table = render_embedded(
        {"delivery": 3, "retry.5m": 2, "parking": 1}, running=True, spool="/var/spool/mailyard"
    )
    lines = table.splitlines()
    assert lines[0] == "embedded spool /var/spool/mailyard: mailyard all is running"
    assert [line.split() for line in lines[1:]] == [
        ["QUEUE", "MESSAGES"],
        ["inbound", "0"],
        ["deferred", "0"],
        ["delivery", "3"],
        ["bounce", "0"],
        ["local", "0"],
        ["retry.5m", "2"],
        ["parking", "1"],
    ]
    assert "not running" in render_embedded({}, running=False, spool="x")
    lanes = render_embedded({"delivery.bulk": 9}, running=True, spool="x", lanes=("bulk",))
    assert [line.split() for line in lanes.splitlines()[4:6]] == [
        ["delivery", "0"],
        ["delivery.bulk", "9"],
    ]


def test_shaping_table_sums_sessions_and_shows_the_lowest_limit_of_the_processes():
    from mailyard.status import render_shaping
    from mailyard.v1 import members_pb2 as mpb

    def beat(host: str, *states: mpb.DestinationState) -> mpb.Heartbeat:
        return mpb.Heartbeat(member=host, hostname=host, destinations=states)

    gmail = dict(key="*.google.com", max_connections=20, connections_share=10, backoff_factor=1)
    text = render_shaping(
        [
            beat("delivery-a", mpb.DestinationState(**gmail, sessions=7, waiting=3)),
            beat(
                "delivery-b",
                mpb.DestinationState(**{**gmail, "max_connections": 10, "backoff_factor": 0.5},
                                     sessions=4),
                mpb.DestinationState(key="slow.example", max_connections=2,
                                     max_messages_per_second=5, backoff_factor=1,
                                     paused_for=120, sessions=0),
            ),
        ]
    )  # fmt: skip
    lines = text.splitlines()
    assert (
        lines[0] == "delivery: 2 processes share the destinations' limits (delivery-a, delivery-b)"
    )
    assert lines[1].split() == [
        "DESTINATION", "CONNECTIONS", "MSG/S", "BACKOFF", "PAUSED", "SESSIONS", "WAITING"
    ]  # fmt: skip
    assert lines[2].split() == ["*.google.com", "10", "-", "0.5", "no", "11", "3"]
    assert lines[3].split() == ["slow.example", "2", "5", "1", "120s", "0", "0"]


def test_shaping_table_says_when_no_delivery_process_was_heard():
    from mailyard.status import render_shaping

    assert "no heartbeats heard" in render_shaping([])
