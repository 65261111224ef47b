"""A real Prometheus server for one test run: its own config, data and port, in a temp dir."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support.processes import free_port


class PrometheusServer:
    """``prometheus`` scraping one static target per component every second."""

    def __init__(
        self, binary: str, workdir: Path, targets: dict[str, int], rule_files: list[Path]
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "mailyard",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"component": component}}
                        for component, port in self.targets.items()
                    ],
                }
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(self._url("/-/ready"), timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.logs()[-3000:]}")

    def wait_for_targets(self, timeout: float = 30) -> None:
        """Until every target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        health: list[str] = []
        while time.monotonic() < deadline:
            targets = self.api("/api/v1/targets")["data"]["activeTargets"]
            health = [target["health"] for target in targets]
            if len(health) == len(self.targets) and set(health) == {"up"}:
                return
            time.sleep(0.2)
        raise AssertionError(f"targets not all up after {timeout}s: {health}")

    def _url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """The JSON answer of an API call, errors included (status "error")."""
        try:
            with urllib.request.urlopen(self._url(path, **params), timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {exc.code}: {body[:500]!r}"}

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def metric_names(self) -> set[str]:
        return set(self.api("/api/v1/label/__name__/values")["data"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/rules")["data"]["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["data"]["alerts"])

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
