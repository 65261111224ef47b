"""The two MTAs under test, each started and stopped by the harness on loopback.

Mailyard runs against the local RabbitMQ with its own queue prefix (or, in
mode ``embedded``, on its own spool in the work directory), finding the sink
through a DNS server on loopback (the same dnspython server the
tests use). Postfix runs as a private instance in a temporary directory —
its own main.cf/master.cf, queue and log file — relaying everything to the
same sink, so neither side does more or less work than the other: accept,
store durably, deliver over SMTP with connection reuse, log each delivery.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

from bench import procstats

REPO = Path(__file__).resolve().parents[1]
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MODES = ("all", "split", "embedded")


class MailyardSystem:
    def __init__(
        self, workdir: Path, *, mode: str, dns: str, sink_port: int, broker_url: str
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.name = f"mailyard-{mode}"
        self.workdir = workdir
        self.embedded = mode == "embedded"
        self.services = ["ingress", "queue", "delivery", "bounce"] if mode == "split" else ["all"]
        self.smtp_port = free_port()
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.config = workdir / f"{self.name}.yaml"
        self.spool_dir = workdir / f"{self.name}-spool-{self.prefix}"
        broker: dict[str, str] = {"url": broker_url, "prefix": self.prefix}
        if self.embedded:
            broker = {"url": "embedded", "spool_dir": str(self.spool_dir), "prefix": self.prefix}
        self.config.write_text(
            yaml.safe_dump(
                {
                    "hostname": "mx.mailyard.bench.test",
                    "broker": broker,
                    "ingress": {
                        "listen": [{"host": "127.0.0.1", "port": self.smtp_port}],
                        "relay_networks": ["127.0.0.0/8"],
                        "local_domains": ["bounces.bench.test"],
                    },
                    "delivery": {"nameservers": [dns], "port": sink_port, "ipv6": False},
                    "metrics": {"host": "127.0.0.1"},
                }
            )
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(self) -> None:
        for service in self.services:
            port = free_port()
            log = (self.workdir / f"{self.name}-{service}.log").open("ab")
            env = {**os.environ, "MAILYARD_METRICS__PORT": str(port)}
            env["PYTHONPATH"] = str(REPO / "services")
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "mailyard", service, "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            self.metrics_ports[service] = port
        for service, port in self.metrics_ports.items():
            _wait_ready(f"http://127.0.0.1:{port}/readyz", self.processes[service])

    def cpu_seconds(self) -> dict[str, float]:
        return {s: procstats.cpu_seconds(p.pid) for s, p in self.processes.items()}

    def peak_rss(self) -> dict[str, int]:
        return {s: procstats.peak_rss_bytes(p.pid) for s, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.embedded:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
        else:
            asyncio.run(self._delete_queues())

    async def _delete_queues(self) -> None:
        sys.path.insert(0, str(REPO / "services"))
        import aio_pika

        from mailyard.broker.topology import Topology
        from mailyard.config import load_settings

        settings = load_settings(self.config)
        topology = Topology(self.prefix, tuple(settings.queue.retry_delays), 2)
        connection = await aio_pika.connect(settings.broker.url)
        async with connection:
            channel = await connection.channel()
            for name in topology.queues:
                await channel.queue_delete(name)
            await channel.exchange_delete(topology.events)


class PostfixSystem:
    name = "postfix"

    def __init__(
        self, workdir: Path, *, sink_host: str, latency_host: str, port: int, latency_domain: str
    ) -> None:
        self.root = workdir / "postfix"
        self.smtp_port = free_port()
        etc, spool, data = self.root / "etc", self.root / "spool", self.root / "data"
        for directory in (etc, spool, data):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, user="postfix")
        self.etc = etc
        (etc / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    f"config_directory = {etc}",
                    f"queue_directory = {spool}",
                    f"data_directory = {data}",
                    "mail_owner = postfix",
                    "setgid_group = postdrop",
                    "inet_interfaces = 127.0.0.1",
                    "inet_protocols = ipv4",
                    "myhostname = postfix.bench.test",
                    "mydestination =",
                    "local_recipient_maps =",
                    "mynetworks = 127.0.0.0/8",
                    "smtpd_relay_restrictions = permit_mynetworks, reject",
                    f"relayhost = [{sink_host}]:{port}",
                    f"transport_maps = inline:{{ {latency_domain}=smtp:[{latency_host}]:{port} }}",
                    f"maillog_file_prefixes = {self.root}",
                    f"maillog_file = {self.root}/maillog",
                    "smtp_tls_security_level = none",
                    "default_process_limit = 100",
                    "",
                ]
            )
        )
        daemons = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (etc / "master.cf").write_text("\n".join(daemons) + "\n")
        self.master_pid = 0
        self._last_seen: dict[int, tuple[str, float]] = {}

    def start(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "start"], check=True, capture_output=True)
        pid_file = self.root / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                self.master_pid = int(pid_file.read_text().strip())
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"Postfix did not start; see {self.root}/maillog")

    def _by_daemon(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"master": [self.master_pid]}
        for pid in procstats.descendants(self.master_pid):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            groups.setdefault(name, []).append(pid)
        return groups

    def cpu_seconds(self) -> dict[str, float]:
        """CPU per daemon name, and the exact total of the whole tree.

        Postfix's daemons come and go (smtp, cleanup, ...), and one that exited
        cannot be read any more. Per daemon, each process counts with the last
        CPU time seen for it, so the figure never goes backwards between two
        readings; it may miss what a process used between its last sighting and
        its exit. The total is exact: master's cutime holds reaped children.
        """
        for name, pids in self._by_daemon().items():
            for pid in pids:
                seconds = procstats.cpu_seconds(pid)  # 0.0 if it just exited
                if seconds >= self._last_seen.get(pid, (name, 0.0))[1]:
                    self._last_seen[pid] = (name, seconds)
        usage: dict[str, float] = {}
        for name, seconds in self._last_seen.values():
            usage[name] = usage.get(name, 0.0) + seconds
        usage["total"] = procstats.tree_cpu_seconds(self.master_pid)
        return usage

    def peak_rss(self) -> dict[str, int]:
        return {
            name: sum(procstats.peak_rss_bytes(pid) for pid in pids)
            for name, pids in self._by_daemon().items()
        }

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")
