"""DKIM in the benchmark: the same key signs for Mailyard and for Postfix through OpenDKIM.

Keys come from ``mailyard dkim keygen``, which prints the record a verifier
needs; OpenDKIM (Debian's ``opendkim``) runs as a milter in front of the
private Postfix, the way a Postfix user signs. The timing sink keeps the
first signed message it receives from each system, and the harness checks
its signature with dkimpy against the printed record: a fast run that
signed wrongly would count for nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dkim
from tests.support.processes import free_port

DOMAIN = "sender.bench.test"  # the From: domain of both load generators
ALGORITHMS = ("rsa", "ed25519")
OPENDKIM = shutil.which("opendkim") or (
    "/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None
)


@dataclass(frozen=True)
class Key:
    algorithm: str
    selector: str
    path: Path
    record: str  # the TXT value, its strings joined

    @property
    def owner(self) -> str:
        return f"{self.selector}._domainkey.{DOMAIN}"


def keygen(workdir: Path, algorithm: str, repo: Path) -> Key:
    selector = f"bench-{algorithm}"
    path = workdir / f"dkim-{algorithm}.pem"
    done = subprocess.run(
        [sys.executable, "-m", "mailyard", "dkim", "keygen", "--domain", DOMAIN,
         "--selector", selector, "--algorithm", algorithm, "--out", str(path), "--force"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(repo / "services")},
    )  # fmt: skip
    # selector._domainkey.domain. IN TXT "v=DKIM1; k=rsa; " "p=..."
    strings = done.stdout.split(" TXT ", 1)[1].strip()
    record = "".join(part for part in strings.split('"')[1::2])
    return Key(algorithm, selector, path, record)


def verify(content: bytes, keys: list[Key]) -> bool:
    """Every DKIM-Signature of ``content`` verifies against the keys' records."""
    records = {f"{k.owner}.".encode(): k.record.encode() for k in keys}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")

    count = content.count(b"DKIM-Signature:")
    return count > 0 and all(
        dkim.DKIM(content).verify(idx=index, dnsfunc=dnsfunc) for index in range(count)
    )


class OpenDkim:
    """An OpenDKIM milter signing everything from loopback with ``key``."""

    def __init__(self, workdir: Path, key: Key) -> None:
        if OPENDKIM is None:
            raise RuntimeError(
                "--dkim with --compare-postfix needs OpenDKIM: apt-get install opendkim"
            )
        self.key = key
        self.port = free_port()
        algorithm = "rsa-sha256" if key.algorithm == "rsa" else "ed25519-sha256"
        # OpenDKIM refuses a configuration or key under a directory others may
        # write to, such as /tmp: its files go where only root writes.
        self.home = Path(tempfile.mkdtemp(prefix="mailyard-bench-opendkim-", dir=_private_root()))
        key_file = self.home / key.path.name
        shutil.copy2(key.path, key_file)
        self.config = self.home / "opendkim.conf"
        self.config.write_text(
            "\n".join(
                [
                    "Syslog no",
                    "Background no",
                    "Mode s",
                    f"Domain {DOMAIN}",
                    f"Selector {key.selector}",
                    f"KeyFile {key_file}",
                    f"Socket inet:{self.port}@127.0.0.1",
                    # What Mailyard signs with: relaxed/relaxed, From oversigned.
                    "Canonicalization relaxed/relaxed",
                    f"SignatureAlgorithm {algorithm}",
                    "OversignHeaders From",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"opendkim-{key.algorithm}.log"

    @property
    def milter(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            assert OPENDKIM is not None
            self.process = subprocess.Popen(
                [OPENDKIM, "-f", "-x", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opendkim exited; see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"opendkim did not listen on {self.port}; see {self.log}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def _private_root() -> str:
    for candidate in ("/run", str(Path.home())):
        if os.access(candidate, os.W_OK) and not os.stat(candidate).st_mode & 0o022:
            return candidate
    raise RuntimeError("no directory writable by us alone for OpenDKIM's files")
