"""Every PromQL expression of the dashboards and alerts, against a real Prometheus.

The four services run as real processes (one per service, each with its own
metrics port) against the real RabbitMQ; a real Prometheus scrapes them every
second with the ``component`` label the chart's PodMonitor sets, and loads the
alert rules. The test sends mail that is delivered, deferred, refused, failed
and bounced, parks garbage, and makes the broker refuse ingress's publishes for
a moment; ingress has a certificate from a test CA and a users file, and the
test logs in over STARTTLS, fails a login and a handshake, and breaks the users
file, so that every metric the dashboards and alerts use exists. Then every
expression must parse, every metric it names must exist, every dashboard panel
must show data, every rule must evaluate cleanly, and the alerts for the trouble
the test made must be pending.
"""

from __future__ import annotations

import contextlib
import re
import signal
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
import yaml

from mailyard.ingress.auth import hash_password
from mailyard.queue import dkimkeys
from tests.observability.artifacts import (
    RULES,
    alert_rules,
    dashboard_expressions,
    dashboards,
    panels,
    require,
)
from tests.observability.prometheus_server import PrometheusServer
from tests.support.broker import publish_raw, rabbitmqctl
from tests.support.pipeline import Pipeline, message, start_pipeline, stop_pipeline, wait_until

if TYPE_CHECKING:
    from tests.support.dns_server import TestDnsServer

pytestmark = pytest.mark.integration

# Grafana's variables, as a query for "every namespace" would see them.
GRAFANA = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
METRIC = re.compile(r"(?<![\w:])(mailyard_[a-z0-9_]+|process_[a-z0-9_]+|up(?=\s*\{))")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# The alerts whose trouble this test makes (their `for:` keeps them pending).
EXPECTED_PENDING = {
    "MailyardParkingQueueNotEmpty",
    "MailyardIngressBrokerUnavailable",
    "MailyardFileReloadFailing",
}
USER, PASSWORD = "app", "observability-password"


def concrete(expr: str) -> str:
    """The expression Grafana would send, for every namespace."""
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def exists(name: str, known: set[str]) -> bool:
    return name in known or any(name + suffix in known for suffix in HISTOGRAM_SERIES)


def all_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard target and every alert rule."""
    targets = [(f"{board} / {title}", concrete(e)) for board, title, e in dashboard_expressions()]
    return targets + [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


@dataclass
class Live:
    pipeline: Pipeline
    prometheus: PrometheusServer
    known: set[str]


@dataclass(frozen=True)
class Credentials:
    """What ingress reads (certificate, key, users file) and what a client trusts."""

    ca: trustme.CA
    cert_file: Path
    key_file: Path
    users_file: Path

    @classmethod
    def make(cls, directory: Path) -> Credentials:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "mx.mailyard.test")
        credentials = cls(
            ca, directory / "tls.crt", directory / "tls.key", directory / "users.yaml"
        )
        credentials.cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(credentials.key_file))
        users = {USER: {"password": hash_password(PASSWORD), "sender_domains": ["sender.test"]}}
        credentials.users_file.write_text(yaml.safe_dump(users))
        return credentials

    def config(self) -> dict[str, Any]:
        return {
            "tls": {"cert_file": str(self.cert_file), "key_file": str(self.key_file)},
            "auth": {"users_file": str(self.users_file)},
        }

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def tls_and_auth(pipeline: Pipeline, credentials: Credentials) -> None:
    """A login over STARTTLS, a wrong password, a failed handshake, a broken users file."""
    with pipeline.smtp() as client:
        client.starttls(context=credentials.client_context())
        client.ehlo("client.test")
        assert client.login(USER, PASSWORD)[0] == 235
    with pipeline.smtp() as client:
        client.starttls(context=credentials.client_context())
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(USER, "not the password")
    # STARTTLS accepted, then bytes that are no TLS ClientHello: a failed handshake.
    client = pipeline.smtp()
    try:
        client.putcmd("starttls")
        assert client.getreply()[0] == 220
        assert client.sock is not None
        client.sock.sendall(b"this is not a TLS handshake\r\n" * 20)
        client.sock.settimeout(10)
        with contextlib.suppress(OSError):
            while client.sock.recv(4096):  # until ingress hangs up
                pass
    finally:
        client.close()
    # A users file that cannot be loaded: ingress keeps the last good one.
    credentials.users_file.write_text("app: [this is not a user\n")
    time.sleep(1.5)  # past the watch interval: the next AUTH looks at the file again
    with pipeline.smtp() as client:
        client.starttls(context=credentials.client_context())
        client.ehlo("client.test")
        assert client.login(USER, PASSWORD)[0] == 235, "the last good users file is kept"


def make_mail_and_trouble(pipeline: Pipeline, credentials: Credentials) -> None:
    """Traffic that makes every metric the dashboards and alerts use exist."""
    script = pipeline.sink.script
    script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user"
    script.rcpt_always["gone@sender.test"] = "550 5.1.1 Sender gone too"
    script.rcpt["later@alpha.test"] = ["451 4.2.1 Try again later"]
    sends = [
        # delivered, failed (a DSN to app@sender.test), deferred then delivered
        ("app@sender.test", ["ok@alpha.test", "ok@beta.test", "nobody@alpha.test"]),
        ("app@sender.test", ["later@alpha.test"]),
        # failed, and its DSN fails too: no DSN for the null sender
        ("gone@sender.test", ["nobody@alpha.test"]),
        # no such domain: a DNS failure
        ("app@sender.test", ["someone@nxdomain.test"]),
        # a local domain: to bounce, never relayed
        ("app@sender.test", ["postmaster@bounces.test"]),
    ]
    for sender, recipients in sends:
        code, text = pipeline.send(sender, recipients, message("observability"))
        assert code == 250, text
    with pipeline.smtp() as client:
        assert client.mail("app@sender.test")[0] == 250
        assert client.docmd("RCPT TO:<no-domain>")[0] == 501
    # Garbage on each consumed queue: every consuming service parks one.
    for queue in ("inbound", "delivery", "bounce"):
        publish_raw(f"{pipeline.prefix}.{queue}", b"not a protobuf message", type="garbage")
    tls_and_auth(pipeline, credentials)
    broker_refuses_inbound(pipeline)


def broker_refuses_inbound(pipeline: Pipeline) -> None:
    """Make RabbitMQ refuse publishes to inbound for a few seconds: ingress answers 451.

    A quorum queue with ``x-overflow: reject-publish`` refuses publishes while more
    messages are ready than its max-length. A policy sets max-length 0 on this run's
    inbound queue only, and the queue service (prefetch 1) is frozen so that messages
    stay ready.
    """
    policy = f"{pipeline.prefix}-observability-full"
    pattern = f"^{re.escape(pipeline.prefix)}\\.inbound$"
    queue_service = pipeline.processes["queue"].process
    assert queue_service is not None

    def set_max_length(limit: int) -> None:
        rabbitmqctl(
            "set_policy", "--apply-to", "queues", policy, pattern, f'{{"max-length": {limit}}}'
        )

    def send() -> int:
        return pipeline.send("app@sender.test", ["ok@alpha.test"], message("full"))[0]

    queue_service.send_signal(signal.SIGSTOP)
    try:
        set_max_length(0)
        refusals = 0
        deadline = time.monotonic() + 30
        # Several refusals over a few scrapes, so that increase() sees them.
        while refusals < 3:
            assert time.monotonic() < deadline, "the broker never refused a publish to inbound"
            if send() == 451:
                refusals += 1
                time.sleep(1.5)
            else:
                time.sleep(0.2)
    finally:
        queue_service.send_signal(signal.SIGCONT)
        # Removing a max-length policy does not lift the limit on RabbitMQ 3.x quorum
        # queues: raise it first, then remove the policy.
        set_max_length(100_000_000)
        try:
            wait_until(lambda: send() == 250, 30, "inbound accepting again", interval=0.5)
        finally:
            rabbitmqctl("clear_policy", policy)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return require("prometheus")


@pytest.fixture(scope="module")
def live(
    prometheus_binary: str,
    broker: str,
    dns_server: TestDnsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("promql-live")
    credentials = Credentials.make(workdir / "credentials")
    dkim_key = workdir / "sender.test.ed25519.pem"  # signs app@sender.test's mail
    dkimkeys.write_key_file(dkim_key, dkimkeys.generate("ed25519"))
    overrides = {
        "metrics": {"queue_poll_interval": "1s"},  # queue gauges as fresh as the scrapes
        "queue": {"prefetch": 1},  # see broker_refuses_inbound
        "ingress": credentials.config(),  # STARTTLS and AUTH on the mx listener
        "dkim": {"keys": [{"domain": "sender.test", "selector": "s1", "key_file": str(dkim_key)}]},
    }
    pipeline = start_pipeline(workdir, dns_server, split=True, overrides=overrides)
    prometheus: PrometheusServer | None = None
    try:
        prometheus = PrometheusServer(
            prometheus_binary,
            workdir / "prometheus",
            {name: process.metrics_port for name, process in pipeline.processes.items()},
            [RULES],
        ).start()
        # Scraping starts a few seconds after the server is ready; the counters must be
        # seen before the traffic, so that rate() and increase() see it.
        prometheus.wait_for_targets()
        make_mail_and_trouble(pipeline, credentials)
        wanted = {name for _, expr in all_expressions() for name in metric_names(expr)}
        server = prometheus
        with contextlib.suppress(AssertionError):  # the tests below say which are missing
            wait_until(
                lambda: all(exists(name, server.metric_names()) for name in wanted),
                60,
                "Prometheus to have every metric the dashboards and alerts use",
                interval=1,
            )
        time.sleep(3)  # a few more scrapes and rule evaluations
        yield Live(pipeline, prometheus, prometheus.metric_names())
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_pipeline(pipeline)


def test_every_expression_parses(live: Live) -> None:
    problems = []
    for where, expr in all_expressions():
        answer = live.prometheus.query(expr)
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')}\n    {expr}")
    assert not problems, "\n".join(problems)


def test_every_metric_named_exists(live: Live) -> None:
    problems = [
        f"{where}: {name}"
        for where, expr in all_expressions()
        for name in sorted(metric_names(expr))
        if not exists(name, live.known)
    ]
    assert not problems, "metrics missing from Prometheus:\n" + "\n".join(problems)


def test_every_dashboard_panel_shows_data(live: Live) -> None:
    empty = []
    for name, board in dashboards().items():
        for panel in panels(board):
            results: list[Any] = []
            for target in panel["targets"]:
                answer = live.prometheus.query(concrete(target["expr"]))
                results += answer.get("data", {}).get("result", [])
            if not results:
                empty.append(f"{name} / {panel['title']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_dashboard_variables_use_existing_metrics(live: Live) -> None:
    for name, board in dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                for metric in metric_names(variable["query"]):
                    assert exists(metric, live.known), (name, variable["name"], metric)


def test_every_rule_loads_and_evaluates_cleanly(live: Live) -> None:
    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in live.prometheus.rule_groups() for rule in group["rules"]]
        done = all(not rule["lastEvaluation"].startswith("0001") for rule in rules)
        return rules if done else []

    rules = wait_until(evaluated, 20, "every rule to be evaluated once", interval=0.5)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_the_alerts_see_the_trouble_the_test_made(live: Live) -> None:
    seen: set[str] = set()

    def active() -> set[str]:
        seen.clear()
        seen.update(alert["labels"]["alertname"] for alert in live.prometheus.alerts())
        return seen

    deadline = time.monotonic() + 30
    while not active() >= EXPECTED_PENDING and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen >= EXPECTED_PENDING, f"pending or firing: {sorted(seen)}"
    # Every service is up and every work queue that holds messages has consumers.
    assert not {name for name in seen if name.endswith("Down")}, seen
    assert "MailyardQueueNoConsumers" not in seen, seen
