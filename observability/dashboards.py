"""Mailyard's Grafana dashboards: the source of charts/mailyard/dashboards/*.json.

    python -m observability.dashboards          # write the JSON (``make dashboards``)
    python -m observability.dashboards --check  # exit 1 if the committed JSON is stale

The overview follows the mail: accepted → queued → delivered / deferred /
bounced, then the queues in between, latency, destinations and TLS, parking.
Each service has its own dashboard with a RED row (rate, errors, duration),
its specifics, and its pods (``services.py``). Every panel's description says
what bad looks like. UIDs are stable; a ``datasource`` variable and a
``namespace`` variable scope every query.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from observability import services
from observability.grafana import (
    BAD,
    GOOD,
    JSON,
    WARN,
    Target,
    bargauge,
    dashboard,
    query_variable,
    row,
    stat,
    timeseries,
)
from observability.promql import (
    COMPONENTS,
    WORK_QUEUES,
    consumers,
    depth,
    increase,
    quantiles,
    rate,
    ratio,
    sel,
)

OUT = Path(__file__).resolve().parents[1] / "charts" / "mailyard" / "dashboards"
TAGS = ("mailyard",)
PER_SECOND = "suffix:/s"
OUTCOME_COLORS = {"delivered": GOOD, "deferred": WARN, "failed": BAD, "expired": BAD}
PARKED = "max(" + sel("mailyard_broker_queue_messages", 'queue="parking"') + ")"
SERVICES_UP = "sum by (component) (" + sel("up", f'component=~"{"|".join(COMPONENTS)}"') + ")"


def namespace_variable() -> JSON:
    return query_variable("namespace", "Namespace", "label_values(mailyard_build_info, namespace)")


def overview() -> JSON:
    recipients = "mailyard_delivery_recipients_total"
    destinations = "mailyard_delivery_destination_recipients_total"
    glance = row(
        "At a glance",
        stat(
            "Services up",
            "Scrape targets answering, per service. Bad: any service at 0 (that step of the "
            "pipeline stops: Mailyard<Service>Down fires), or fewer than the replicas you run.",
            Target(SERVICES_UP, "{{component}}"),
            thresholds=((BAD, None), (GOOD, 1)),
            width=8,
        ),
        stat(
            "Accepted",
            "Messages accepted by ingress per second (250 after DATA). Bad: a sudden drop to 0 "
            "while your applications send (ingress down, or refusing with 451).",
            Target(rate("mailyard_ingress_accepted_total"), "messages"),
            unit=PER_SECOND,
        ),
        stat(
            "Delivered",
            "Recipients delivered per second (remote 250). Bad: far below what is accepted "
            "for longer than a retry delay, or 0 while the delivery queue holds mail.",
            Target(rate(recipients, 'outcome="delivered"'), "recipients"),
            unit=PER_SECOND,
        ),
        stat(
            "Failure ratio",
            "Share of recipients refused permanently (5xx) by the remote servers. Bad: above "
            "10% (MailyardDeliveryFailureRatioHigh): a bad list, a blocklisting, or content "
            "the receivers refuse.",
            Target(ratio(recipients, 'outcome="failed"'), "failed"),
            unit="percentunit",
            thresholds=((GOOD, None), (WARN, 0.05), (BAD, 0.10)),
        ),
        stat(
            "Parked",
            "Messages in the parking queue: undecodable or poison messages that nothing "
            "retries. Bad: anything but 0 (MailyardParkingQueueNotEmpty); see the runbook.",
            Target(PARKED, "parked"),
            thresholds=((GOOD, None), (BAD, 1)),
        ),
    )
    flow = row(
        "Flow: accepted → queued → delivered, deferred, bounced",
        timeseries(
            "Ingress: accepted and refused",
            "Messages and recipients accepted, and SMTP commands refused by reason. Bad: "
            "refusals for broker_unavailable (451: the broker could not store the message), a "
            "drop of accepted messages, or a jump of one refusal reason from a known sender.",
            Target(rate("mailyard_ingress_accepted_total"), "accepted messages"),
            Target(rate("mailyard_ingress_accepted_recipients_total"), "accepted recipients"),
            Target(rate("mailyard_ingress_rejected_total", by="reason"), "refused: {{reason}}"),
            unit=PER_SECOND,
            width=8,
        ),
        timeseries(
            "Queue: split into delivery jobs, retried, expired",
            "Messages the queue service split, the jobs it made (one per destination domain), "
            "jobs put on the retry ladder and recipients given up at the message lifetime. Bad: "
            "messages split well below messages accepted (the inbound queue grows), or any "
            "expired recipients.",
            Target(rate("mailyard_queue_messages_total"), "messages split"),
            Target(rate("mailyard_queue_jobs_total", by="destination"), "jobs: {{destination}}"),
            Target(rate("mailyard_queue_retries_total"), "jobs retried"),
            Target(rate("mailyard_queue_expired_recipients_total"), "recipients expired"),
            unit=PER_SECOND,
            width=8,
        ),
        timeseries(
            "Delivery: recipient outcomes",
            "What the remote servers answered, per recipient: delivered (2xx), deferred (4xx or "
            "no host reachable: retried later), failed (5xx: a DSN goes back to the sender). "
            "Bad: failed or deferred growing against delivered "
            "(MailyardDeliveryFailureRatioHigh, MailyardDeliveryDeferralRatioHigh).",
            Target(rate(recipients, by="outcome"), "{{outcome}}"),
            unit=PER_SECOND,
            stack=True,
            colors=OUTCOME_COLORS,
            width=8,
        ),
        timeseries(
            "Bounced: failed recipients and DSNs",
            "Recipients that failed or expired, and the delivery status notifications (DSNs) "
            "sent back for them. Bad: failures without DSNs following (bounce down or its "
            "queue growing), or DSNs skipped for a null sender rising (DSNs themselves bounce).",
            Target(rate(recipients, 'outcome="failed"'), "failed recipients"),
            Target(rate("mailyard_queue_expired_recipients_total"), "expired recipients"),
            Target(rate("mailyard_bounce_dsns_total", by="kind"), "DSNs: {{kind}}"),
            Target(rate("mailyard_bounce_dsns_skipped_total", by="reason"), "no DSN: {{reason}}"),
            unit=PER_SECOND,
            width=12,
        ),
        timeseries(
            "Refused for broker trouble",
            "SMTP transactions answered 451 4.3.0 because RabbitMQ could not confirm the "
            "message. Clients keep their mail and retry. Bad: anything above 0 for more than a "
            "moment (MailyardIngressBrokerUnavailable).",
            Target(
                rate("mailyard_ingress_rejected_total", 'reason="broker_unavailable"', by="stage"),
                "{{stage}}",
            ),
            unit=PER_SECOND,
            colors={"data": BAD, "mail": BAD},
            width=12,
        ),
    )
    queues = row(
        "Queues",
        timeseries(
            "Work queue depth",
            "Messages ready in the queues Mailyard services consume (not counting those being "
            "worked on). Bad: a queue that keeps growing (MailyardQueueBacklogGrowing): its "
            "consumers do not keep up; scale that service or find what slows it.",
            Target(depth(WORK_QUEUES), "{{queue}}"),
            width=8,
        ),
        timeseries(
            "Retry ladder depth",
            "Deferred jobs waiting out their delay in the TTL queues (retry.<delay>). Mail is "
            "expected here. Bad: the long delays filling up (mail that keeps failing for hours "
            "will expire), or every rung growing at once (a big destination is down).",
            Target(depth("retry.+"), "{{queue}}"),
            width=8,
        ),
        timeseries(
            "Consumers per work queue",
            "Consumers attached to each work queue, as the broker reports them. Bad: 0 for a "
            "queue that holds messages (MailyardQueueNoConsumers): they wait until a consumer "
            "returns.",
            Target(consumers(WORK_QUEUES), "{{queue}}"),
            width=8,
        ),
    )
    latency = row(
        "Latency",
        timeseries(
            "Accept-to-delivery latency",
            "From ingress's 250 to the remote server's 250, per delivered recipient. Retried "
            "mail counts too, so p99 may be hours. Bad: p50 above a few seconds while the "
            "queues are empty (slow DNS or slow remotes), or p95 climbing with the backlog.",
            *quantiles("mailyard_delivery_latency_seconds"),
            unit="s",
        ),
        timeseries(
            "Time spent at each step (p95)",
            "p95 of: ingress storing a message (end of DATA to broker confirm), the queue, "
            "delivery and bounce services handling one message, and one delivery attempt. Bad: "
            "the store time above ~1 s (the broker is under pressure; 451s are next), or one "
            "step far slower than usual.",
            Target(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate({sel('mailyard_ingress_store_seconds_bucket')}[$__rate_interval])))",
                "ingress store",
            ),
            Target(
                "histogram_quantile(0.95, sum by (le, service) "
                f"(rate({sel('mailyard_handle_seconds_bucket')}[$__rate_interval])))",
                "{{service}} handling",
            ),
            Target(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate({sel('mailyard_delivery_attempt_seconds_bucket')}[$__rate_interval])))",
                "delivery attempt",
            ),
            unit="s",
        ),
    )
    reach = row(
        "Destinations and TLS",
        bargauge(
            "Top destinations",
            "Recipients per mailbox provider over the dashboard's time range (providers listed "
            "in metrics.destinations; every other domain is 'other'). Bad: a provider you send "
            "a lot to missing from the top (mail to it is stuck), or 'other' hiding a domain "
            "worth its own label.",
            Target(
                f"topk(10, {increase(destinations, by='destination')})",
                "{{destination}}",
                instant=True,
            ),
        ),
        timeseries(
            "Deferred or failed, by destination",
            "Share of recipients per provider that were not delivered at the attempt. Bad: one "
            "provider well above the others: it throttles, greylists or blocks us (check its "
            "postmaster pages and the 4xx/5xx texts in the delivery logs).",
            Target(
                rate(destinations, 'outcome=~"deferred|failed"', by="destination")
                + "\n/\n"
                + rate(destinations, by="destination"),
                "{{destination}}",
            ),
            unit="percentunit",
            max_value=1,
            width=8,
        ),
        timeseries(
            "TLS share of SMTP transactions",
            "Share of outbound SMTP transactions made over STARTTLS. Bad: a drop from its usual "
            "level: TLS handshakes failing (see delivery host failures) and mail going in clear.",
            Target(
                ratio("mailyard_delivery_transactions_total", 'tls="yes"'),
                "over TLS",
            ),
            unit="percentunit",
            max_value=1,
            colors={"over TLS": GOOD},
            width=8,
        ),
    )
    parking = row(
        "Parking and versions",
        timeseries(
            "Parking queue depth",
            "Messages in the parking queue: undecodable, or dead-lettered after too many "
            "deliveries without an ack. Nothing retries them. Bad: anything but 0 "
            "(MailyardParkingQueueNotEmpty).",
            Target(PARKED, "parked"),
            colors={"parked": BAD},
            width=8,
        ),
        timeseries(
            "Messages parked, by service and reason",
            "Messages a service moved to the parking queue, and why (undecodable, "
            "handler_error). Broker-side dead-letters (delivery limit) show only in the depth. "
            "Bad: any rate above 0, and above all a steady one (every message of some kind "
            "fails).",
            Target(
                rate("mailyard_parked_total", by="service, queue, reason"),
                "{{service}} from {{queue}}: {{reason}}",
            ),
            unit=PER_SECOND,
            width=8,
        ),
        timeseries(
            "Versions running",
            "Mailyard processes per version. Bad: two versions for longer than a rollout "
            "takes (a stuck rollout), or fewer processes than you run.",
            Target(f"count by (version) ({sel('mailyard_build_info')})", "{{version}}"),
            width=8,
        ),
    )
    return dashboard(
        uid="mailyard-overview",
        title="Mailyard / Overview",
        description="Mail through Mailyard: accepted, queued, delivered, deferred and bounced.",
        tags=TAGS,
        rows=[glance, flow, queues, latency, reach, parking],
        variables=[namespace_variable()],
    )


BOARDS: dict[str, Callable[[], JSON]] = {
    "mailyard-overview.json": overview,
    **{
        f"mailyard-{name}.json": partial(services.board, name, namespace_variable())
        for name in COMPONENTS
    },
}


def render(board: JSON) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """File name → the JSON text the generator makes for it."""
    return {name: render(build()) for name, build in BOARDS.items()}


def stale(out: Path = OUT) -> list[str]:
    """Files under ``out`` that differ from what the generator makes (or are missing)."""
    return [
        name
        for name, text in generated().items()
        if not (out / name).exists() or (out / name).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.out)
        for name in outdated:
            print(f"{args.out / name} is stale: run `make dashboards`", file=sys.stderr)
        return 1 if outdated else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
