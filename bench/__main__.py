"""make bench — see docs/performance.md.

python -m bench [--count 20000] [--size 2048] [--concurrency 20]
                [--modes all,split,embedded] [--compare-postfix] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.broker import BROKER_URL, reachable
from tests.support.dns_server import TestDnsServer

from bench import dkim, harness, procstats
from bench.harness import LATENCY_DOMAIN, LATENCY_HOST, SINK_HOST, Load, Result
from bench.submission import make_certificate
from bench.systems import REPO, MailyardSystem, PostfixSystem

ZONE = f"""
$TTL 3600
@        SOA  ns.test. hostmaster.test. 1 3600 600 86400 60
@        NS   ns.test.
ns       A    127.0.0.1
bench    MX   10 mx.bench
mx.bench A    {SINK_HOST}
latency.bench    MX  10 mx.latency.bench
mx.latency.bench A   {LATENCY_HOST}
"""
assert LATENCY_DOMAIN == "latency.bench.test"


def port_on_both() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind((SINK_HOST, 0))
            port = first.getsockname()[1]
            try:
                with socket.socket() as second:
                    second.bind((LATENCY_HOST, port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no port free on both sink addresses")


def table(results: list[Result]) -> str:
    rows = [
        ("", *[r.system for r in results]),
        ("accepted msg/s", *[f"{r.accepted_per_s:.0f}" for r in results]),
        ("delivered msg/s (end to end)", *[f"{r.delivered_per_s:.0f}" for r in results]),
        ("lost / duplicated", *[f"{r.lost} / {r.duplicated}" for r in results]),
        ("latency load msg/s", *[f"{r.latency_rate:.0f}" for r in results]),
        *[
            (f"latency {p} ms", *[str(r.latency_ms.get(p, "-")) for r in results])
            for p in ("p50", "p95", "p99")
        ],
        ("CPU s / 1000 msgs (MTA)", *[f"{_mta_cpu(r):.2f}" for r in results]),
        ("CPU s / 1000 msgs (RabbitMQ)", *[f"{r.rabbitmq_cpu_per_1000:.2f}" for r in results]),
        ("submission msg/s (STARTTLS+AUTH)", *[f"{r.submission_per_s:.0f}" for r in results]),
        (
            "submission CPU s / 1000 (MTA + RabbitMQ)",
            *[
                f"{r.submission_cpu_per_1000:.2f} + {r.submission_rabbitmq_cpu_per_1000:.2f}"
                for r in results
            ],
        ),
        ("peak RSS MiB (sum)", *[f"{sum(r.peak_rss_mib.values()):.0f}" for r in results]),
    ]
    if any(r.dkim_verified is not None for r in results):
        rows.append(("DKIM: signed (latency phase), verified", *[_dkim_cell(r) for r in results]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    by_name = {r.system: r for r in results}
    for r in results:
        if r.system.startswith("postfix"):
            continue
        # A signing Mailyard beside Postfix signing with the same kind of key.
        algorithm = r.system.rpartition("-dkim-")[2] if "-dkim-" in r.system else ""
        peer = by_name.get(f"postfix-opendkim-{algorithm}") or by_name.get("postfix")
        if peer is None:
            continue
        delivered = r.delivered_per_s / peer.delivered_per_s
        accepted = r.accepted_per_s / peer.accepted_per_s
        cpu = (_mta_cpu(r) + r.rabbitmq_cpu_per_1000) / _mta_cpu(peer)
        lines.append(
            f"{r.system} / {peer.system}: delivered {delivered:.2f}x, accepted {accepted:.2f}x, "
            f"CPU per message (with RabbitMQ) {cpu:.2f}x"
        )
    return "\n".join(lines)


def _dkim_cell(result: Result) -> str:
    if result.dkim_verified is None:
        return "-"
    return f"{result.dkim_signed}, {'yes' if result.dkim_verified else 'NO'}"


def _mta_cpu(result: Result) -> float:
    if "total" in result.cpu_per_1000:
        return result.cpu_per_1000["total"]
    return sum(result.cpu_per_1000.values())


def in_turn(systems: list[Any], round_number: int) -> list[Any]:
    """Postfix first (its throughput sets the latency load), the others rotated by round.

    Whoever runs right after Postfix shares the machine with its teardown (and
    every system with what the one before it left behind): rotating spreads
    that over all of them instead of always charging the same one.
    """
    first = [s for s in systems if isinstance(s, PostfixSystem)]
    others = [s for s in systems if not isinstance(s, PostfixSystem)]
    shift = (round_number - 1) % len(others) if others else 0
    return first + others[shift:] + others[:shift]


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=2048, help="payload bytes per message")
    parser.add_argument("--concurrency", type=int, default=20, help="SMTP sessions")
    parser.add_argument(
        "--modes",
        default="all,split",
        help="Mailyard modes: all, split (RabbitMQ), embedded (the local spool)",
    )
    parser.add_argument("--compare-postfix", action="store_true")
    parser.add_argument(
        "--dkim", default="",
        help="also run each mode signing with these key types (rsa,ed25519); with "
        "--compare-postfix, Postfix too, through an OpenDKIM milter",
    )  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="msg/s; default: half of Postfix's throughput with --compare-postfix, "
        "else half the system's own",
    )
    parser.add_argument(
        "--submission-count", type=int,
        help="messages over STARTTLS + AUTH on the submission port, 10 a session "
        "(default: a quarter of --count; 0 for none)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-repo", type=Path,
        help="another checkout (an earlier commit): its split mode runs in the same rounds, "
        "as mailyard-split-before, for a before/after on one machine state",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=Path("bench/results.jsonl"))
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="run every system this many times, interleaved; medians are reported",
    )  # fmt: skip
    args = parser.parse_args()

    modes = [mode for mode in args.modes.split(",") if mode]
    problem = reachable() if set(modes) - {"embedded"} else None
    if problem:
        print(f"RabbitMQ is not reachable at {BROKER_URL} ({problem}): start it with "
              "`rabbitmq-server -detached`", file=sys.stderr)  # fmt: skip
        return 1
    submissions = args.count // 4 if args.submission_count is None else args.submission_count
    load = Load(
        args.count, args.size, args.concurrency, args.latency_seconds, args.latency_rate,
        submission_count=submissions,
    )  # fmt: skip
    port = port_on_both()
    dns = TestDnsServer(ZONE).start()
    workdir = Path(tempfile.mkdtemp(prefix="mailyard-bench-"))
    systems: list[object] = []
    try:
        workdir.chmod(0o755)  # Postfix's daemons must be able to enter it
        certificate = make_certificate(workdir) if submissions else None
        systems += [
            MailyardSystem(workdir, mode=mode, dns=dns.address, sink_port=port,
                           broker_url=BROKER_URL, certificate=certificate)
            for mode in modes
        ]  # fmt: skip
        algorithms = [a for a in args.dkim.split(",") if a]
        unknown = set(algorithms) - set(dkim.ALGORITHMS)
        if unknown:
            print(f"--dkim takes {', '.join(dkim.ALGORITHMS)}, not {', '.join(unknown)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        keys = [dkim.keygen(workdir, algorithm, REPO) for algorithm in algorithms]
        for key in keys:
            systems.extend(
                MailyardSystem(workdir, mode=mode, dns=dns.address, sink_port=port,
                               broker_url=BROKER_URL, dkim_key=key)
                for mode in modes
            )  # fmt: skip
        if args.compare_repo:
            systems.append(
                MailyardSystem(workdir, mode="split", dns=dns.address, sink_port=port,
                               broker_url=BROKER_URL, repo=args.compare_repo.resolve(),
                               label="before")
            )  # fmt: skip
        if args.compare_postfix:
            # First in every round: its throughput sets the round's latency load.
            systems.insert(0,
                PostfixSystem(workdir, sink_host=SINK_HOST, latency_host=LATENCY_HOST,
                              port=port, latency_domain=LATENCY_DOMAIN, certificate=certificate)
            )  # fmt: skip
            systems[1:1] = [
                PostfixSystem(workdir, sink_host=SINK_HOST, latency_host=LATENCY_HOST,
                              port=port, latency_domain=LATENCY_DOMAIN,
                              opendkim=dkim.OpenDkim(workdir, key))
                for key in keys
            ]  # fmt: skip
        print(
            f"{load.count} messages of {load.size} bytes over {load.concurrency} sessions, "
            f"{args.rounds} round(s)"
        )
        runs: dict[str, list[Result]] = {}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}/{args.rounds}")
            # Latency is compared at one offered load for every system: half
            # of Postfix's throughput in this round (the target's "half that
            # load"); alone, each system at half its own throughput.
            latency_rate = load.latency_rate
            for system in in_turn(systems, round_number):
                result = harness.run(system, load, port, latency_rate=latency_rate)
                runs.setdefault(result.system, []).append(result)
                if isinstance(system, PostfixSystem) and latency_rate is None:
                    latency_rate = result.latency_rate
        results = [harness.combine(system_runs) for system_runs in runs.values()]
    finally:
        dns.stop()
        for system in systems:
            if isinstance(system, PostfixSystem) and system.opendkim is not None:
                system.opendkim.remove()
        if args.keep:
            print(f"logs and configs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(results))
    for result in results:
        delivered = ", ".join(f"{r['delivered_per_s']:.0f}" for r in result.rounds)
        print(f"{result.system}: delivered msg/s by round: {delivered}")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with args.results.open("a") as out:
        for result in results:
            out.write(
                json.dumps({"at": stamp, "machine": procstats.machine(), **asdict(result)}) + "\n"
            )
    print(f"\nappended to {args.results}")
    return 0 if all(_sound(r) for r in results) else 1


def _sound(result: Result) -> bool:
    """Nothing lost, and whatever was to be signed was signed and verifies."""
    return result.lost == 0 and result.latency_lost == 0 and result.dkim_verified is not False


if __name__ == "__main__":
    sys.exit(main())
