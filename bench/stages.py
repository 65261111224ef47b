"""make bench-stages — what each split-mode service costs on its own.

In ``make bench`` every process runs at once on the same cores, so one
service's CPU per message there moves with what the others do (by a
twentieth from run to run on a two-core machine): too coarse to see what
a change to one service costs. Here split mode runs one stage at a time,
each service alone draining a full queue:

1. ingress takes ``--count`` messages from smtp-source (nothing consumes them);
2. queue, started then, splits every one of them into delivery jobs;
3. delivery, started last, sends every job to smtp-sink.

Per stage: the service's CPU per message (``/proc``, from its readiness to
the end of the stage), RabbitMQ's, and the messages a second. With
``--compare-repo`` an earlier checkout runs the same stages, in turn with
this one, round by round; medians are reported.

python -m bench.stages [--count 20000] [--rounds 3] [--compare-repo ../baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from tests.support.broker import BROKER_URL, reachable
from tests.support.dns_server import TestDnsServer

from bench import procstats
from bench.__main__ import ZONE, port_on_both
from bench.harness import BULK_DOMAIN, SINK_HOST, wait_for
from bench.loadgen import SMTP_SOURCE, Progress, smtp_source
from bench.sinks import CountingSink
from bench.systems import REPO, MailyardSystem

STAGES = ("ingress", "queue", "delivery")


def depth(name: str) -> int:
    async def ask() -> int:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count or 0

    return asyncio.run(ask())


def wait_drained(name: str, timeout: float) -> None:
    """Until queue ``name`` is empty: one connection, asked ten times a second
    (a connection per question would be RabbitMQ CPU the stage counts)."""

    async def watch() -> None:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            deadline = time.monotonic() + timeout
            while True:
                queue = await channel.declare_queue(name, passive=True)
                if not queue.declaration_result.message_count:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out waiting for {name} to drain")
                await asyncio.sleep(0.1)

    asyncio.run(watch())


class Stage:
    """The CPU of ``service`` and of RabbitMQ, and the time, from now to :meth:`end`."""

    def __init__(self, system: MailyardSystem, service: str, rabbit: int) -> None:
        self.pid, self.rabbit = system.processes[service].pid, rabbit
        self.cpu = procstats.cpu_seconds(self.pid)
        self.rabbit_cpu = procstats.cpu_seconds(rabbit)
        self.started = time.perf_counter()

    def end(self, count: int) -> dict[str, float]:
        """``count``: the messages handled since the stage began (a service starts
        work before its readiness is seen: what it did before is not counted)."""
        if count < 1:
            raise RuntimeError("a stage was over before its service was seen ready: more --count")
        seconds = time.perf_counter() - self.started
        return {
            "cpu_ms": round((procstats.cpu_seconds(self.pid) - self.cpu) / count * 1000, 4),
            "rabbitmq_ms": round(
                (procstats.cpu_seconds(self.rabbit) - self.rabbit_cpu) / count * 1000, 4
            ),
            "per_s": round(count / seconds, 1),
        }


def run_stages(system: MailyardSystem, count: int, sink: CountingSink) -> dict[str, dict]:
    rabbit = procstats.rabbitmq_pid()
    assert rabbit is not None
    stages: dict[str, dict] = {}
    try:
        system.start_service("ingress")
        stage = Stage(system, "ingress", rabbit)
        smtp_source(
            "127.0.0.1", system.smtp_port, count=count, size=2048, concurrency=20,
            recipient=f"user@{BULK_DOMAIN}", progress=Progress(),
        )  # fmt: skip
        stages["ingress"] = stage.end(count)

        inbound = f"{system.prefix}.inbound"
        batches = depth(inbound)  # AMQP messages, each of a few mails (group commit)
        system.start_service("queue")
        stage = Stage(system, "queue", rabbit)
        left = depth(inbound)
        wait_drained(inbound, max(300, count / 20))
        stages["queue"] = stage.end(round(count * left / batches))

        already = sink.count
        system.start_service("delivery")
        stage = Stage(system, "delivery", rabbit)
        arrived = sink.count - already
        wait_for(lambda: sink.count - already >= count, max(300, count / 20), "the delivery stage")
        stages["delivery"] = stage.end(count - arrived)
        time.sleep(1.0)
        stages["delivery"]["duplicated"] = sink.count - already - count
    finally:
        system.stop()
    return stages


def median(rounds: list[dict[str, dict]]) -> dict[str, dict[str, float]]:
    return {
        stage: {key: statistics.median(r[stage][key] for r in rounds) for key in rounds[0][stage]}
        for stage in STAGES
    }


def table(medians: dict[str, dict[str, dict[str, float]]]) -> str:
    names = list(medians)
    rows = [("", *names)]
    for stage in STAGES:
        for label, key, shown in (
            (f"{stage}: CPU ms/msg", "cpu_ms", "{:.3f}"),
            ("  RabbitMQ ms/msg", "rabbitmq_ms", "{:.3f}"),
            ("  msg/s", "per_s", "{:.0f}"),
        ):
            rows.append((label, *[shown.format(medians[n][stage][key]) for n in names]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = (cell.rjust(width + 2) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append(row[0].ljust(widths[0]) + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-repo", type=Path, help="an earlier checkout, as `before`")
    parser.add_argument("--results", type=Path, default=Path("bench/results.jsonl"))
    args = parser.parse_args()
    problem = reachable()
    if problem:
        print(f"RabbitMQ is not reachable at {BROKER_URL} ({problem})", file=sys.stderr)
        return 1
    if SMTP_SOURCE is None:
        print("smtp-source not found (apt-get install postfix)", file=sys.stderr)
        return 1
    repos = {"mailyard-split": REPO}
    if args.compare_repo:
        repos["mailyard-split-before"] = args.compare_repo.resolve()
    port = port_on_both()
    dns = TestDnsServer(ZONE).start()
    sink = CountingSink(SINK_HOST, port)
    workdir = Path(tempfile.mkdtemp(prefix="mailyard-stages-"))
    rounds: dict[str, list[dict[str, dict]]] = {name: [] for name in repos}
    try:
        for number in range(1, args.rounds + 1):
            order = list(repos) if number % 2 else list(reversed(repos))
            for name in order:
                system = MailyardSystem(
                    workdir, mode="split", dns=dns.address, sink_port=port,
                    broker_url=BROKER_URL, repo=repos[name],
                    label="before" if name.endswith("before") else "",
                )  # fmt: skip
                stages = run_stages(system, args.count, sink)
                rounds[name].append(stages)
                shown = ", ".join(f"{s} {stages[s]['cpu_ms']:.3f}" for s in STAGES)
                print(f"round {number}/{args.rounds} {name}: CPU ms/msg {shown}", flush=True)
    finally:
        sink.stop()
        dns.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: median(runs) for name, runs in rounds.items()}
    print()
    print(table(medians))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with args.results.open("a") as out:
        for name, runs in rounds.items():
            row = {
                "at": stamp, "machine": procstats.machine(), "kind": "stages", "system": name,
                "count": args.count, "stages": medians[name], "rounds": runs,
            }  # fmt: skip
            out.write(json.dumps(row) + "\n")
    print(f"\nappended to {args.results}")
    duplicated = any(r["delivery"]["duplicated"] for runs in rounds.values() for r in runs)
    return 1 if duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
