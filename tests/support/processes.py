"""Mailyard services as real processes, the way they run in production."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and not handed out before in this test run: the kernel
    may give a just-closed port again, and a pipeline asks for several (its
    listeners, each process's metrics) before anything binds them."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class MailyardProcess:
    def __init__(
        self, command: str, config: Path, log_dir: Path, *, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.config = config
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{command}-{self.metrics_port}.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "services"),
            "MAILYARD_METRICS__PORT": str(self.metrics_port),
            "MAILYARD_METRICS__HOST": "127.0.0.1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> MailyardProcess:
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailyard", self.command, "--config", str(self.config)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def is_ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30) -> MailyardProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"mailyard {self.command} exited: {self.logs()[-3000:]}")
            if self.is_ready():
                return self
            time.sleep(0.1)
        raise AssertionError(
            f"mailyard {self.command} not ready after {timeout}s: {self.logs()[-3000:]}"
        )

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def wait_metric(self, name: str, at_least: float, timeout: float, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.metric(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} stayed at {value}, wanted >= {at_least}")

    def terminate(self, timeout: float = 40) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"mailyard {self.command} ignored SIGTERM for {timeout}s"
            ) from None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines as records; anything else on stderr (a traceback) is skipped.

        Tests compare fields, not text: the encoder decides spacing and key order.
        """
        records = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def logged(self, **fields: object) -> bool:
        """Whether some log line carries all these fields with these values."""
        return any(
            all(record.get(key) == value for key, value in fields.items())
            for record in self.log_records()
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
