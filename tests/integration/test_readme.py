"""The README's first steps, as a newcomer takes them: the shipped example config,
the embedded spool (no broker), a message sent with swaks, delivered to a local sink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.pipeline import wait_until
from tests.support.processes import REPO, MailyardProcess, free_port
from tests.support.smtp_sink import Sink

EXAMPLE = REPO / "examples" / "mailyard.yaml"


def swaks() -> str:
    found = shutil.which("swaks")
    if found is None:
        message = "swaks is not installed (apt-get install swaks; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_make_run_config_delivers_through_a_smarthost_without_any_broker(tmp_path) -> None:
    sink_port = free_port()
    sink = Sink(["127.0.0.1"], sink_port).start()
    smtp_port = free_port()
    env = {
        # What the README says to set, plus what keeps this run apart from others.
        "MAILYARD_DELIVERY__SMARTHOST": json.dumps({"host": "127.0.0.1", "port": sink_port}),
        "MAILYARD_INGRESS__LISTEN": json.dumps([{"host": "127.0.0.1", "port": smtp_port}]),
        "MAILYARD_BROKER__SPOOL_DIR": str(tmp_path / "spool"),
    }
    check = subprocess.run(
        [sys.executable, "-m", "mailyard", "check-broker", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin", **env},
    )
    assert check.returncode == 0, check.stderr
    assert "embedded spool" in check.stdout
    process = MailyardProcess("all", EXAMPLE, tmp_path, env=env).start()
    try:
        process.wait_ready()
        sent = subprocess.run(
            [
                swaks(), "--server", f"127.0.0.1:{smtp_port}", "--from", "you@example.com",
                "--to", "someone@example.net", "--header", "Subject: from the README",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "250 2.0.0 Ok: queued as" in sent.stdout
        [received] = sink.wait_for(lambda m: len(m) == 1, 20, "the message at the sink")
        assert received.recipients == ("someone@example.net",)
        assert b"Subject: from the README" in received.content
        wait_until(
            lambda: process.metric("mailyard_ingress_accepted_total") == 1, 10, "the counter"
        )
        assert (tmp_path / "spool" / "mailyard.sqlite3").exists()
    finally:
        assert process.terminate() == 0
        process.close()
        sink.stop()
