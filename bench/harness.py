"""Run one MTA through the benchmark: throughput, then latency at half that load."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import dkim, procstats
from bench.loadgen import SMTP_SOURCE, Progress, generate, smtp_source
from bench.sinks import CountingSink, TimingSink

SINK_HOST = "127.0.0.10"
LATENCY_HOST = "127.0.0.11"
BULK_DOMAIN = "bench.test"
LATENCY_DOMAIN = "latency.bench.test"


@dataclass
class Load:
    count: int = 20_000
    size: int = 2048
    concurrency: int = 20
    latency_seconds: float = 20.0  # how long the half-load latency phase runs
    latency_rate: float | None = None  # messages/s; default: see bench/__main__.py
    submission_count: int = 0  # messages over STARTTLS + AUTH (0: no such phase)
    per_session: int = 10


@dataclass
class Result:
    system: str
    count: int
    accepted_per_s: float
    delivered_per_s: float
    lost: int
    duplicated: int
    cpu_per_1000: dict[str, float]
    rabbitmq_cpu_per_1000: float
    peak_rss_mib: dict[str, float]
    latency_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_lost: int = 0
    generator: str = ""
    # Over STARTTLS + AUTH PLAIN on the submission port, 10 messages a session.
    submission_per_s: float = 0.0
    submission_delivered_per_s: float = 0.0
    submission_cpu_per_1000: float = 0.0  # the MTA's, all processes
    submission_rabbitmq_cpu_per_1000: float = 0.0
    # DKIM: latency-phase messages that arrived signed, and whether a signed
    # one's signatures verified (None: the system does not sign).
    dkim_signed: int = 0
    dkim_verified: bool | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)


def combine(runs: list[Result]) -> Result:
    """Several rounds of one system: medians, with every round's key figures kept."""

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    first = runs[0]
    return Result(
        system=first.system,
        count=first.count,
        accepted_per_s=median([r.accepted_per_s for r in runs]),
        delivered_per_s=median([r.delivered_per_s for r in runs]),
        lost=sum(r.lost for r in runs),
        duplicated=sum(r.duplicated for r in runs),
        cpu_per_1000={
            k: median([r.cpu_per_1000.get(k, 0.0) for r in runs]) for k in first.cpu_per_1000
        },
        rabbitmq_cpu_per_1000=median([r.rabbitmq_cpu_per_1000 for r in runs]),
        peak_rss_mib={k: max(r.peak_rss_mib.get(k, 0.0) for r in runs) for k in first.peak_rss_mib},
        latency_rate=median([r.latency_rate for r in runs]),
        latency_ms={
            p: median([r.latency_ms[p] for r in runs if p in r.latency_ms])
            for p in first.latency_ms
        },
        latency_lost=sum(r.latency_lost for r in runs),
        generator=first.generator,
        submission_per_s=median([r.submission_per_s for r in runs]),
        submission_delivered_per_s=median([r.submission_delivered_per_s for r in runs]),
        submission_cpu_per_1000=median([r.submission_cpu_per_1000 for r in runs]),
        submission_rabbitmq_cpu_per_1000=median([r.submission_rabbitmq_cpu_per_1000 for r in runs]),
        dkim_signed=sum(r.dkim_signed for r in runs),
        dkim_verified=(None if first.dkim_verified is None else all(r.dkim_verified for r in runs)),
        rounds=[
            {
                "delivered_per_s": r.delivered_per_s,
                "accepted_per_s": r.accepted_per_s,
                "cpu_per_1000": round(
                    sum(r.cpu_per_1000.values())
                    if "total" not in r.cpu_per_1000
                    else r.cpu_per_1000["total"],
                    3,
                ),
                "rabbitmq_cpu_per_1000": r.rabbitmq_cpu_per_1000,
                "submission_per_s": r.submission_per_s,
                **{f"latency_{p}_ms": v for p, v in r.latency_ms.items()},
            }
            for r in runs
        ],
    )


class Display:
    """One progress line, rewritten in place on a terminal."""

    def __init__(self, label: str, read: Callable[[], str]) -> None:
        self.label, self.read = label, read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Display:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._print(final=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._print(final=False)

    def _print(self, final: bool) -> None:
        line = f"  {self.label}: {self.read()}"
        if sys.stdout.isatty():
            print("\r" + line.ljust(100), end="\n" if final else "", flush=True)
        elif final:
            print(line, flush=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def blast(
    system: Any, load: Load, sink: CountingSink, count: int, label: str
) -> tuple[float, float]:
    """Send ``count`` messages flat out; (seconds to accept all, seconds until all delivered)."""
    progress = Progress()
    already = sink.count
    started = time.perf_counter()
    recipient = f"user@{BULK_DOMAIN}"

    def rate() -> str:
        elapsed = max(time.perf_counter() - started, 1e-9)
        delivered = sink.count - already
        return (
            f"accepted {progress.sent}/{count}, delivered {delivered} ({delivered / elapsed:.0f}/s)"
        )

    with Display(label, rate):
        if SMTP_SOURCE:
            smtp_source(
                "127.0.0.1", system.smtp_port, count=count, size=load.size,
                concurrency=load.concurrency, recipient=recipient, progress=progress,
            )  # fmt: skip
        else:
            generate(
                "127.0.0.1", system.smtp_port, count=count, size=load.size,
                concurrency=load.concurrency, recipient_for=lambda i: f"{i}{recipient}",
                progress=progress,
            )  # fmt: skip
        accepted = time.perf_counter() - started
        wait_for(lambda: sink.count - already >= count, max(300, count / 20), f"{count} deliveries")
    return accepted, sink.last_arrival - started


def run(system: Any, load: Load, port: int, *, latency_rate: float | None = None) -> Result:
    """One system through the throughput phase, then the latency phase at
    ``latency_rate`` messages/s (default: half the throughput it just had)."""
    print(f"{system.name}:", flush=True)
    sink = CountingSink(SINK_HOST, port)
    sample = Path(tempfile.mkdtemp(prefix="mailyard-bench-dkim-")) / "signed.eml"
    timing = TimingSink(LATENCY_HOST, port, sample)
    # The embedded spool uses no broker: RabbitMQ's CPU is not its cost.
    rabbit = None if getattr(system, "embedded", False) else procstats.rabbitmq_pid()
    try:
        system.start()
        warmup = min(1000, max(100, load.count // 20))
        blast(system, load, sink, warmup, "warm-up")

        cpu_before = system.cpu_seconds()
        rabbit_before = procstats.cpu_seconds(rabbit) if rabbit else 0.0
        accept_s, deliver_s = blast(system, load, sink, load.count, "throughput")
        cpu_after = system.cpu_seconds()
        rabbit_after = procstats.cpu_seconds(rabbit) if rabbit else 0.0
        time.sleep(1.0)  # anything extra (duplicates) would show up now
        delivered = sink.count - warmup
        delivered_rate = load.count / deliver_s

        # Latency at half the load this system just sustained.
        rate = latency_rate or delivered_rate / 2
        n = max(200, int(rate * load.latency_seconds))
        progress = Progress()
        with Display(
            f"latency at {rate:.0f}/s",
            lambda: f"sent {progress.sent}/{n}, arrived {len(timing.arrivals)}",
        ):
            accepted_at = generate(
                "127.0.0.1", system.smtp_port, count=n, size=load.size,
                concurrency=load.concurrency, rate=rate, progress=progress,
                recipient_for=lambda i: f"{i}lat@{LATENCY_DOMAIN}",
            )  # fmt: skip
            with contextlib.suppress(RuntimeError):  # reported as lost below
                wait_for(lambda: len(timing.arrivals) >= n, 120, "latency messages")
        latencies = sorted(
            (timing.arrivals[i] - accepted_at[i]) * 1000
            for i in accepted_at
            if i in timing.arrivals
        )
        keys = getattr(system, "dkim_keys", [])
        verified = (
            (dkim.verify(sample.read_bytes(), keys) if sample.exists() else False) if keys else None
        )
        signed = len(timing.signed.intersection(str(i) for i in accepted_at))
        submission = _submission(system, load, sink, rabbit)
        peak = system.peak_rss()
    finally:
        system.stop()
        sink.stop()
        timing.stop()
        shutil.rmtree(sample.parent, ignore_errors=True)

    def per_1000(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round((after[k] - before.get(k, 0.0)) / load.count * 1000, 3) for k in after}

    return Result(
        system=system.name,
        count=load.count,
        accepted_per_s=round(load.count / accept_s, 1),
        delivered_per_s=round(delivered_rate, 1),
        lost=max(0, load.count - delivered),
        duplicated=max(0, delivered - load.count),
        cpu_per_1000=per_1000(cpu_before, cpu_after),
        rabbitmq_cpu_per_1000=round((rabbit_after - rabbit_before) / load.count * 1000, 3),
        peak_rss_mib={k: round(v / 2**20, 1) for k, v in peak.items()},
        latency_rate=round(rate, 1),
        latency_ms=_percentiles(latencies),
        latency_lost=n - len(latencies),
        generator="smtp-source" if SMTP_SOURCE else "asyncio",
        dkim_signed=signed,
        dkim_verified=verified,
        **submission,
    )


def _submission(
    system: Any, load: Load, sink: CountingSink, rabbit: int | None
) -> dict[str, float]:
    """STARTTLS + AUTH + 10 messages per session, flat out: rates and CPU per message."""
    count = load.submission_count
    if not count or getattr(system, "submission_port", None) is None:
        return {}
    from bench.submission import submit

    progress = Progress()
    already = sink.count
    cpu_before = _total_cpu(system)
    rabbit_before = procstats.cpu_seconds(rabbit) if rabbit else 0.0
    started = time.perf_counter()
    with Display("submission (STARTTLS + AUTH)", lambda: f"accepted {progress.sent}/{count}"):
        submit(
            system.submission_port, count=count, size=load.size, concurrency=load.concurrency,
            per_session=load.per_session, recipient=f"sub@{BULK_DOMAIN}",
            tls=system.certificate.client, progress=progress,
        )  # fmt: skip
        accepted = time.perf_counter() - started
        wait_for(lambda: sink.count - already >= count, max(300, count / 20), "submissions")
    delivered = sink.last_arrival - started
    cpu = _total_cpu(system) - cpu_before
    rabbit_cpu = (procstats.cpu_seconds(rabbit) - rabbit_before) if rabbit else 0.0
    return {
        "submission_per_s": round(count / accepted, 1),
        "submission_delivered_per_s": round(count / delivered, 1),
        "submission_cpu_per_1000": round(cpu / count * 1000, 3),
        "submission_rabbitmq_cpu_per_1000": round(rabbit_cpu / count * 1000, 3),
    }


def _total_cpu(system: Any) -> float:
    usage = system.cpu_seconds()
    return float(usage["total"] if "total" in usage else sum(usage.values()))


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}
