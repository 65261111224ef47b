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
from bench.dkim import DOMAIN as DKIM_DOMAIN
from bench.dkim import Key as DkimKey
from bench.dkim import OpenDkim
from bench.submission import PASSWORD, USER, Certificate

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
        self,
        workdir: Path,
        *,
        mode: str,
        dns: str,
        sink_port: int,
        broker_url: str,
        certificate: Certificate | None = None,
        repo: Path = REPO,
        label: str = "",
        dkim_key: DkimKey | None = None,
    ) -> None:
        """``repo`` and ``label``: another checkout of Mailyard (an earlier commit),
        run beside this one in the same rounds; it gets no key it may not know.
        ``dkim_key``: the queue signs every message with it."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if dkim_key is not None:
            label = "-".join(filter(None, [label, f"dkim-{dkim_key.algorithm}"]))
        self.name = f"mailyard-{mode}" + (f"-{label}" if label else "")
        self.dkim_keys = [dkim_key] if dkim_key is not None else []
        self.repo = repo
        legacy = repo != REPO
        certificate = None if legacy else certificate
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
        listen: list[dict[str, object]] = [{"host": "127.0.0.1", "port": self.smtp_port}]
        ingress: dict[str, object] = {
            "listen": listen,
            "relay_networks": ["127.0.0.0/8"],
            "local_domains": ["bounces.bench.test"],
        }
        self.certificate = certificate
        self.submission_port: int | None = None
        if certificate is not None:
            self.submission_port = free_port()
            listen.append({"host": "127.0.0.1", "port": self.submission_port, "role": "submission"})
            users = workdir / f"{self.name}-users.yaml"
            users.write_text(yaml.safe_dump({USER: {"password": _hash(PASSWORD)}}))
            ingress["tls"] = {
                "cert_file": str(certificate.cert_file),
                "key_file": str(certificate.key_file),
            }
            ingress["auth"] = {"users_file": str(users)}
        self.config.write_text(
            yaml.safe_dump(
                {
                    "hostname": "mx.mailyard.bench.test",
                    "broker": broker,
                    "ingress": ingress,
                    "delivery": {
                        "nameservers": [dns],
                        "port": sink_port,
                        "ipv6": False,
                        # The sink is on loopback, which is prohibited by default.
                        **(
                            {"prohibited_networks": ["169.254.0.0/16"]}
                            if knows(repo, "prohibited_networks")
                            else {}
                        ),
                    },
                    "metrics": {"host": "127.0.0.1"},
                    **(
                        {"dkim": {"keys": [_dkim_config(k) for k in self.dkim_keys]}}
                        if self.dkim_keys
                        else {}
                    ),
                }
            )
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(self) -> None:
        for service in self.services:
            self._spawn(service)
        for service in self.services:
            self.wait_ready(service)

    def start_service(self, service: str) -> None:
        """One service of split mode on its own, ready (``bench/stages.py``)."""
        self._spawn(service)
        self.wait_ready(service)

    def _spawn(self, service: str) -> None:
        port = free_port()
        log = (self.workdir / f"{self.name}-{service}.log").open("ab")
        env = {**os.environ, "MAILYARD_METRICS__PORT": str(port)}
        env["PYTHONPATH"] = str(self.repo / "services")
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", "mailyard", service, "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.metrics_ports[service] = port

    def wait_ready(self, service: str) -> None:
        port = self.metrics_ports[service]
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

        from mailyard.broker import topology_for
        from mailyard.config import load_settings

        # This checkout's topology: a superset of an earlier one's (rungs, lanes).
        settings = load_settings(self.config)
        topology = topology_for(settings)
        connection = await aio_pika.connect(settings.broker.url)
        async with connection:
            channel = await connection.channel()
            for name in topology.queues:
                await channel.queue_delete(name)
            for exchange in (topology.events, topology.members):
                await channel.exchange_delete(exchange)


def knows(repo: Path, key: str) -> bool:
    """Whether the checkout at ``repo`` has the config key (an earlier commit may not)."""
    return key in (repo / "services" / "mailyard" / "config.py").read_text()


def _dkim_config(key: DkimKey) -> dict[str, str]:
    return {"domain": DKIM_DOMAIN, "selector": key.selector, "key_file": str(key.path)}


def _hash(password: str) -> str:
    sys.path.insert(0, str(REPO / "services"))
    from mailyard.ingress.auth import hash_password

    return hash_password(password)


class PostfixSystem:
    def __init__(
        self,
        workdir: Path,
        *,
        sink_host: str,
        latency_host: str,
        port: int,
        latency_domain: str,
        certificate: Certificate | None = None,
        opendkim: OpenDkim | None = None,
    ) -> None:
        """``opendkim``: a milter that signs what this Postfix accepts."""
        self.opendkim = opendkim
        self.name = "postfix" + (f"-opendkim-{opendkim.key.algorithm}" if opendkim else "")
        self.dkim_keys = [opendkim.key] if opendkim is not None else []
        self.root = workdir / self.name
        self.smtp_port = free_port()
        self.certificate = certificate
        self.submission_port = free_port() if certificate is not None else None
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
                    *self._submission_settings(etc),
                    *self._milter_settings(),
                    "",
                ]
            )
        )
        submission = (
            [
                f"127.0.0.1:{self.submission_port} inet n - n - - smtpd",
                "  -o smtpd_tls_security_level=may",
                "  -o smtpd_sasl_auth_enable=yes",
                "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
                "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
            ]
            if self.submission_port is not None
            else []
        )
        daemons = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            *submission,
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
            "tlsmgr unix - - n 1000? 1 tlsmgr",
        ]
        (etc / "master.cf").write_text("\n".join(daemons) + "\n")
        self.master_pid = 0
        self._last_seen: dict[int, tuple[str, float]] = {}

    def _milter_settings(self) -> list[str]:
        if self.opendkim is None:
            return []
        return [
            f"smtpd_milters = {self.opendkim.milter}",
            "non_smtpd_milters = $smtpd_milters",
            "milter_default_action = tempfail",  # never unsigned by accident
            "milter_protocol = 6",
        ]

    def _submission_settings(self, etc: Path) -> list[str]:
        """TLS "may" and SASL through Cyrus with one static user in a sasldb (sasl2-bin)."""
        if self.certificate is None:
            return []
        sasl = etc / "sasl"
        sasl.mkdir(exist_ok=True)
        sasldb = self.root / "data" / "sasldb2"  # postfix's own, not in the root-owned etc
        login, realm = USER.split("@")
        saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
        if not Path(saslpasswd2).exists():
            raise RuntimeError(
                "the submission phase needs Cyrus SASL for Postfix: "
                "apt-get install sasl2-bin libsasl2-modules (or --submission-count 0)"
            )
        subprocess.run(
            [saslpasswd2, "-p", "-c", "-f", str(sasldb), "-u", realm, login],
            input=PASSWORD.encode(), check=True, capture_output=True,
        )  # fmt: skip
        shutil.chown(sasldb, user="postfix")
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
            f"sasldb_path: {sasldb}\n"
        )
        return [
            f"smtpd_tls_cert_file = {self.certificate.cert_file}",
            f"smtpd_tls_key_file = {self.certificate.key_file}",
            "smtpd_tls_session_cache_database =",
            "smtpd_sasl_type = cyrus",
            f"cyrus_sasl_config_path = {sasl}",
            "smtpd_sasl_path = smtpd",
            "smtpd_sasl_security_options = noanonymous",
        ]

    def start(self) -> None:
        if self.opendkim is not None:
            self.opendkim.start()
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
        if self.opendkim is not None and self.opendkim.process is not None:
            # The milter is Postfix's signing cost: it counts in the total.
            usage["opendkim"] = procstats.cpu_seconds(self.opendkim.process.pid)
            usage["total"] += usage["opendkim"]
        return usage

    def peak_rss(self) -> dict[str, int]:
        peaks = {
            name: sum(procstats.peak_rss_bytes(pid) for pid in pids)
            for name, pids in self._by_daemon().items()
        }
        if self.opendkim is not None and self.opendkim.process is not None:
            peaks["opendkim"] = procstats.peak_rss_bytes(self.opendkim.process.pid)
        return peaks

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True)
        if self.opendkim is not None:
            self.opendkim.stop()


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
