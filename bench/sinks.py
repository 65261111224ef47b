"""Where the benchmark's mail ends up.

Postfix's ``smtp-sink`` (C, fast) takes the throughput phase; it prints a
running counter (``-c``) that we read to know when everything arrived. The
latency phase uses an aiosmtpd sink in a thread that notes when each message
arrived, keyed by the ``X-Bench-Id`` header the generator put in.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
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
    def __init__(self, arrivals: dict[str, float]) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        match = _BENCH_ID.search(envelope.original_content)
        if match:
            self.arrivals[match.group(1).decode()] = time.perf_counter()
        return "250 2.0.0 OK"


class TimingSink:
    """An aiosmtpd sink that records when each benchmark message arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.arrivals: dict[str, float] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        handler = _Stamp(self.arrivals)
        self._server = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(lambda: SMTP(handler), host, port), self._loop
        ).result(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
