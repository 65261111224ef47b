"""Postfix's ``smtp-sink`` as a remote server that misbehaves on command.

It is Postfix's own test server: it can answer 4xx or 5xx at any stage,
hang up without a word, or send 421, and can dump every transaction to a
file, which is how we check what it received.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
)


@dataclass(frozen=True)
class Dumped:
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes


class PostfixSink:
    def __init__(self, host: str, port: int, dump_dir: Path, *options: str) -> None:
        if SMTP_SINK is None:
            raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
        self.dump_dir = dump_dir
        dump_dir.mkdir(parents=True, exist_ok=True)
        dump_dir.chmod(0o777)  # smtp-sink drops to 'nobody' when started as root
        self.command = [
            SMTP_SINK,
            "-4",
            "-u",
            "nobody",
            "-d",
            f"{dump_dir}/%M.",
            *options,
            f"{host}:{port}",
            "64",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PostfixSink:
        self.process = subprocess.Popen(self.command, stderr=subprocess.PIPE)
        time.sleep(0.3)
        if self.process.poll() is not None:
            raise RuntimeError(f"smtp-sink failed: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stderr is not None:
                self.process.stderr.close()

    def messages(self) -> list[Dumped]:
        """Every completed transaction smtp-sink dumped."""
        found = []
        for path in sorted(self.dump_dir.iterdir()):
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                continue  # still being written
            envelope, _, body = data.partition(b"\nReceived: ")
            fields = [line.split(b": ", 1) for line in envelope.split(b"\n") if b": " in line]
            mail_from = next(v for k, v in fields if k == b"X-Mail-Args").decode()
            recipients = tuple(v.decode() for k, v in fields if k == b"X-Rcpt-Args")
            found.append(Dumped(mail_from, recipients, b"Received: " + body))
        return found
