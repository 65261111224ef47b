"""Where the benchmark's mail ends up.

Postfix's ``smtp-sink`` (C, fast) takes the throughput phase; it prints a
running counter (``-c``) that we read to know when everything arrived. The
latency phase uses an aiosmtpd sink that notes when each message arrived,
keyed by the ``X-Bench-Id`` header the generator put in. It runs in a process
of its own (``python -m bench.sinks HOST PORT``): in a thread of the harness it
would wait for the generator's GIL, and the latency would be the harness's.
Both sides stamp with ``time.monotonic()``, one clock for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
)
_COUNTER = re.compile(rb"mesg=(\d+)")
_BENCH_ID = re.compile(rb"^X-Bench-Id: (\S+)\r?$", re.MULTILINE)


class CountingSink:
    """smtp-sink on host:port, counting messages as they arrive."""

    def __init__(self, host: str, port: int) -> None:
        if SMTP_SINK is None:
            raise RuntimeError("smtp-sink not found (apt-get install postfix)")
        self.host, self.port = host, port
        self.count = 0
        self.last_arrival = 0.0
        self._process = subprocess.Popen(
            [SMTP_SINK, "-c", "-4", "-u", "nobody", f"{host}:{port}", "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.3)

    def _read(self) -> None:
        assert self._process.stdout is not None
        buffer = b""
        while chunk := self._process.stdout.read1(65536):  # type: ignore[attr-defined]
            buffer = (buffer + chunk)[-4096:]
            counts = _COUNTER.findall(buffer)
            if counts and int(counts[-1]) != self.count:
                self.count = int(counts[-1])
                self.last_arrival = time.perf_counter()

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


class _Stamp:
    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        match = _BENCH_ID.search(envelope.original_content)
        if match:
            sys.stdout.write(f"{match.group(1).decode()} {time.monotonic()!r}\n")
            sys.stdout.flush()
        return "250 2.0.0 OK"


class TimingSink:
    """The aiosmtpd timing sink in its own process; ``arrivals`` fills as it reports."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.arrivals: dict[str, float] = {}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.sinks", host, str(port)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != b"listening":
            raise RuntimeError(f"the timing sink did not start on {host}:{port}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            bench_id, _, stamp = line.decode().partition(" ")
            self.arrivals[bench_id] = float(stamp)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._reader.join(10)


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(_Stamp()), host, port)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
