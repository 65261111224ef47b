"""Where the benchmark's mail ends up.

Postfix's ``smtp-sink`` (C, fast) takes the throughput phase; it prints a
running counter (``-c``) that we read to know when everything arrived. The
latency phase uses a small asyncio sink that notes when each message arrived,
keyed by the ``X-Bench-Id`` header the generator put in. It runs in a process
of its own (``python -m bench.sinks HOST PORT``): in a thread of the harness it
would wait for the generator's GIL, and the latency would be the harness's.
Both sides stamp with ``time.monotonic()``, one clock for every process.
It also notes which messages came DKIM-signed, and keeps the first signed
one in a file (``python -m bench.sinks HOST PORT SAMPLE``) so the harness
can check that signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

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


async def _timing_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sample: Path | None = None
) -> None:
    """Just enough SMTP (with PIPELINING) to take mail and stamp its arrival.

    Written by hand rather than with aiosmtpd: the sink shares two cores with
    the MTA it measures, and aiosmtpd's command loop costs about as much per
    message as an MTA hop; this costs a fraction of it.
    """
    writer.write(b"220 latency-sink.bench.test ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-latency-sink.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                content = await reader.readuntil(b"\r\n.\r\n")
                arrived = time.monotonic()
                match = _BENCH_ID.search(content)
                if match:
                    headers = content.split(b"\r\n\r\n", 1)[0]
                    signed = headers.startswith(b"DKIM-Signature:") or (
                        b"\nDKIM-Signature:" in headers
                    )
                    if signed and sample is not None:
                        _keep_first(sample, content)
                    sys.stdout.write(f"{match.group(1).decode()} {arrived!r} {int(signed)}\n")
                    sys.stdout.flush()
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 2.0.0 OK\r\n")
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


_kept: set[Path] = set()


def _keep_first(sample: Path, content: bytes) -> None:
    """The first signed message, as it was before dot-stuffing and the final dot."""
    if sample in _kept:
        return
    _kept.add(sample)
    sample.write_bytes(content[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n."))


class TimingSink:
    """The timing sink in its own process; ``arrivals`` fills as it reports."""

    def __init__(self, host: str, port: int, sample: Path) -> None:
        """``sample``: where the first DKIM-signed message is written."""
        self.host, self.port = host, port
        self.sample = sample
        self.arrivals: dict[str, float] = {}
        self.signed: set[str] = set()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.sinks", host, str(port), str(sample)],
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
            bench_id, stamp, signed = line.decode().split(" ")
            self.arrivals[bench_id] = float(stamp)
            if signed.strip() == "1":
                self.signed.add(bench_id)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._reader.join(10)


async def _serve(host: str, port: int, sample: Path | None) -> None:
    session = functools.partial(_timing_session, sample=sample)
    server = await asyncio.start_server(session, host, port, limit=64 * 2**20)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sample = Path(sys.argv[3]) if len(sys.argv) > 3 else None
        asyncio.run(_serve(sys.argv[1], int(sys.argv[2]), sample))
