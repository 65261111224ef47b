"""A whole Mailyard pipeline for one test: its own prefix, sinks, processes."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import spool
from tests.support.broker import BROKER_URL, delete_topology, publish_raw, queue_messages
from tests.support.dns_server import TestDnsServer
from tests.support.processes import REPO, MailyardProcess, free_port
from tests.support.smtp_sink import Sink

# Loopback addresses of the test zone's mail hosts (tests/support/dns_server.py).
ALPHA = "127.0.0.2"
BETA_PRIMARY = "127.0.0.3"
BETA_SECONDARY = "127.0.0.4"
GAMMA = "127.0.0.5"
SENDER = "127.0.0.6"
BOUNCES = "127.0.0.7"
ALL_HOSTS = [ALPHA, BETA_PRIMARY, BETA_SECONDARY, GAMMA, SENDER, BOUNCES]
SERVICES = ("ingress", "queue", "delivery", "bounce")
ADAPTERS = ("rabbitmq", "embedded")
# delivery.prohibited_networks' default, without loopback (where the sinks are).
TEST_PROHIBITED = [
    "0.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10",
]  # fmt: skip


@dataclass(frozen=True)
class ParkedMessage:
    """A parked message, as either adapter keeps it."""

    type: str | None
    message_id: str | None
    headers: dict[str, Any]
    body: bytes


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; a value of None removes the key (its default applies)."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def port_free_on_all(hosts: list[str]) -> int:
    """A port that is free on every one of ``hosts``."""
    import socket

    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on all sink addresses")


@dataclass
class Pipeline:
    prefix: str
    config_path: Path
    ingress_port: int
    sink: Sink
    dns: TestDnsServer
    adapter: str = "rabbitmq"
    spool_dir: Path | None = None
    processes: dict[str, MailyardProcess] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.adapter == "embedded"

    def parked(self) -> list[ParkedMessage]:
        """Everything on the parking queue (taken off it, on RabbitMQ)."""
        if self.spool_dir is not None:
            return [ParkedMessage(*row) for row in spool.parked(self.spool_dir)]
        return [
            ParkedMessage(m.type, m.message_id, dict(m.headers or {}), m.body)
            for m in queue_messages(f"{self.prefix}.parking")
        ]

    def inject(self, queue: str, body: bytes, **properties: Any) -> None:
        """Put a raw message on a work queue, as a broken or hostile producer would."""
        self.inject_many([(queue, body, properties)])

    def inject_many(self, messages: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        """Several raw messages: (queue role, body, AMQP properties) each.

        The embedded spool belongs to its process: it is stopped, the rows
        written into the file, and started again (once for all of them).
        """
        if self.spool_dir is None:
            for queue, body, properties in messages:
                publish_raw(f"{self.prefix}.{queue}", body, **properties)
            return
        process = self.process("all")
        assert process.terminate() == 0
        for queue, body, properties in messages:
            spool.insert(self.spool_dir, queue, body, properties.get("type"))
        process.start().wait_ready()

    def process(self, service: str) -> MailyardProcess:
        """The process running ``service`` (the single 'all' process if not split)."""
        return self.processes.get(service) or self.processes["all"]

    def add_replica(self, service: str, tmp_path: Path) -> MailyardProcess:
        """One more process of ``service`` (RabbitMQ only), ready; stopped with the rest.

        It is ``processes["<service>-2"]`` (then -3, ...).
        """
        assert not self.embedded, "the embedded spool belongs to one process"
        number = 2
        while f"{service}-{number}" in self.processes:
            number += 1
        process = MailyardProcess(service, self.config_path, tmp_path).start()
        self.processes[f"{service}-{number}"] = process
        return process.wait_ready()

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``mailyard <args> --config <this pipeline's>``, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "mailyard", *args, "--config", str(self.config_path)],
            env={**os.environ, "PYTHONPATH": str(REPO / "services")},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    def smtp(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.ingress_port, timeout=30)
        client.ehlo("client.test")
        return client

    def unfinished(self, mail_from: str, recipient: str, content: bytes) -> smtplib.SMTP:
        """A session in the middle of DATA: content sent, the final dot not yet."""
        client = self.smtp()
        assert client.mail(mail_from)[0] == 250
        assert client.rcpt(recipient)[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(content)
        return client

    def send(self, mail_from: str, recipients: list[str], content: bytes) -> tuple[int, bytes]:
        """Send one message; the reply to DATA (or the first refusal)."""
        with self.smtp() as client:
            code, text = client.mail(mail_from)
            if code != 250:
                return code, text
            for recipient in recipients:
                code, text = client.rcpt(recipient)
                if code != 250:
                    return code, text
            return client.data(content)


def message(subject: str, body: str = "Hello.\r\n", sender: str = "app@sender.test") -> bytes:
    return (
        f"From: {sender}\r\nTo: someone@alpha.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@sender.test>\r\n\r\n{body}"
    ).encode()


def strip_trace(content: bytes) -> bytes:
    """The content minus the Received: header Mailyard prepended."""
    assert content.startswith(b"Received: from "), content[:200]
    end = content.index(b"\r\n", content.index(b"(Mailyard)"))
    # The header's last line is the date, one line after "(Mailyard) ... id ...;".
    while content[end + 2 : end + 3] == b"\t":
        end = content.index(b"\r\n", end + 2)
    return content[end + 2 :]


def build_config(
    path: Path,
    *,
    prefix: str,
    ingress_port: int,
    dns: TestDnsServer,
    sink_port: int,
    overrides: dict[str, Any],
    spool_dir: Path | None = None,
) -> Path:
    config = {
        "hostname": "mx.mailyard.test",
        "broker": {
            "url": BROKER_URL if spool_dir is None else "embedded",
            "prefix": prefix,
            "reconnect_interval": "1s",
            "publish_timeout": "5s",
            **({"spool_dir": str(spool_dir)} if spool_dir is not None else {}),
        },
        "ingress": {
            "listen": [{"host": "127.0.0.1", "port": ingress_port}],
            "relay_networks": ["127.0.0.0/8"],
            "local_domains": ["bounces.test"],
        },
        "delivery": {
            "nameservers": [dns.address],
            "port": sink_port,
            # The sinks live on loopback: everything else stays prohibited.
            "prohibited_networks": TEST_PROHIBITED,
            "connect_timeout": "3s",
            "command_timeout": "15s",
            "dns_timeout": "3s",
            "ipv6": False,
        },
        "queue": {"retry_delays": ["1s"], "max_lifetime": "1h"},
        # Short, to keep DSN tests quick; tests of the window set their own.
        "bounce": {"dsn_window": "1s"},
        "shutdown_grace": "10s",
    }
    path.write_text(yaml.safe_dump(deep_merge(config, overrides)))
    return path


def start_pipeline(
    tmp_path: Path,
    dns: TestDnsServer,
    *,
    overrides: dict[str, Any] | None = None,
    hosts: list[str] | None = None,
    split: bool = False,
    sink_tls: Any = None,
    adapter: str = "rabbitmq",
) -> Pipeline:
    """Sinks, then Mailyard on ``adapter``: split into four processes, or ``mailyard all``.

    The embedded spool runs only as ``mailyard all``; ``split`` is ignored there.
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS}")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    spool_dir = tmp_path / f"spool-{prefix}" if adapter == "embedded" else None
    split = split and spool_dir is None
    sink_hosts = hosts or ALL_HOSTS
    for attempt in range(5):  # another process may take the port between check and bind
        sink_port = port_free_on_all(ALL_HOSTS)
        try:
            sink = Sink(sink_hosts, sink_port, tls_context=sink_tls).start()
            break
        except OSError:
            if attempt == 4:
                raise
    config = build_config(
        tmp_path / "mailyard.yaml",
        prefix=prefix,
        ingress_port=free_port(),
        dns=dns,
        sink_port=sink_port,
        overrides=overrides or {},
        spool_dir=spool_dir,
    )
    ingress_port = yaml.safe_load(config.read_text())["ingress"]["listen"][0]["port"]
    pipeline = Pipeline(prefix, config, ingress_port, sink, dns, adapter, spool_dir)
    try:
        for name in SERVICES if split else ("all",):
            pipeline.processes[name] = MailyardProcess(name, config, tmp_path).start()
        for process in pipeline.processes.values():
            process.wait_ready()
    except BaseException:
        for process in pipeline.processes.values():
            process.close()
        sink.stop()
        raise
    return pipeline


def stop_pipeline(pipeline: Pipeline) -> dict[str, int]:
    codes = {}
    for name, process in pipeline.processes.items():
        try:
            codes[name] = process.terminate()
        finally:
            process.close()
    pipeline.sink.stop()
    if not pipeline.embedded:
        delete_topology(pipeline.config_path)
    return codes


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
