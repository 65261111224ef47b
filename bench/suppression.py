"""The suppression check's cost on the queue's hot path: a micro-benchmark, seconds of CPU.

    PYTHONPATH=services:. python -m bench.suppression [--entries 100000] [--rounds 20000]

Times ``plan_accepted`` (the queue service's split and plan) for one message
of 1 and of 10 recipients (three domains), with an empty list (the check is
skipped), a list of ``--entries`` addresses none of which is a recipient (a
dict lookup per recipient), and the same list holding one recipient (its
event is made). Variants are timed in turn, best of 7, so that a busy
machine blurs them alike. Not a timed test: it prints microseconds.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mailyard import wire
from mailyard.queue.plan import plan_accepted
from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

NOW = datetime.now(UTC)


def message(recipients: int) -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id="01BENCH",
        mail_from="app@sender.test",
        recipients=[f"user{n}@example{n % 3}.test" for n in range(recipients)],
        content=b"Subject: bench\r\n\r\n" + b"x" * 2000,
        received_at=wire.timestamp(NOW),
        origin=pb.ORIGIN_SMTP,
    )


def listing(entries: int, *extra: str) -> SuppressionState:
    state = SuppressionState()
    addresses = [f"gone{n}@example{n % 50}.test" for n in range(entries)]
    for address in [*addresses, *extra]:
        entry = Entry(address, None, "550 5.1.1", "InvalidRecipient", Source.BOUNCE, NOW, None)
        state.apply(Added(entry))
    return state


def planner(messages: list[pb.AcceptedMessage], state: SuppressionState) -> Callable[[], None]:
    def once() -> None:
        plan_accepted(
            messages,
            local_domains=(),
            max_recipients_per_job=50,
            lifetime=timedelta(days=5),
            max_jobs=50,
            max_bytes=1_048_576,
            may_repeat=False,
            suppressions=state,
            now=NOW,
        )

    return once


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    full = listing(args.entries)
    lookups = [f"user{n}@example{n % 3}.test" for n in range(100)]

    def look() -> None:
        for address in lookups:
            full.lookup(address, "sender.test", NOW)

    rounds = max(1, args.rounds // 10)
    nanoseconds = min(timeit.repeat(look, number=rounds, repeat=7)) / rounds / len(lookups) * 1e9
    print(f"one lookup (a miss among {args.entries}): {nanoseconds:.0f} ns")
    print(f"plan_accepted, microseconds per message (best of 7 x {args.rounds}):")
    for count in (1, 10):
        messages = [message(count)]
        variants = {
            "empty list": planner(messages, SuppressionState()),
            f"{args.entries} entries, no hit": planner(messages, full),
            "one suppressed": planner(messages, listing(args.entries, messages[0].recipients[0])),
        }
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(7):
            for name, once in variants.items():
                took = timeit.timeit(once, number=args.rounds) / args.rounds * 1e6
                best[name] = min(best[name], took)
        base = best["empty list"]
        cells = [f"{name} {took:6.2f} (+{took - base:.2f})" for name, took in best.items()]
        print(f"  {count:>2} recipient(s): " + "   ".join(cells))


if __name__ == "__main__":
    main()
