"""PromQL fragments shared by Mailyard's dashboards.

Every selector is scoped to the ``$namespace`` variable, and rates use Grafana's
``$__rate_interval``. Queue gauges are exported by every Mailyard process, so
they are always read with ``max by (queue)``, never summed.
"""

from __future__ import annotations

from observability.grafana import Target

NAMESPACE = 'namespace=~"$namespace"'
WINDOW = "$__rate_interval"

COMPONENTS = ("ingress", "queue", "delivery", "bounce")
# The delivery lanes: `delivery` for transactional mail, `delivery.<class>` for the others.
DELIVERY_QUEUES = "delivery|delivery[.].+"
# Queues a Mailyard service consumes; retry queues only wait, parking waits for a human.
WORK_QUEUES = f"inbound|{DELIVERY_QUEUES}|deferred|bounce|local"


def sel(metric: str, *matchers: str) -> str:
    """``metric{namespace=~"$namespace", <matchers>}``."""
    return f"{metric}{{{', '.join((NAMESPACE, *matchers))}}}"


def _sum(by: str) -> str:
    return f"sum by ({by}) " if by else "sum"


def rate(metric: str, *matchers: str, by: str = "") -> str:
    """Per-second rate of a counter, summed over pods (and ``by`` labels)."""
    return f"{_sum(by)}(rate({sel(metric, *matchers)}[{WINDOW}]))"


def increase(metric: str, *matchers: str, by: str = "", window: str = "$__range") -> str:
    return f"{_sum(by)}(increase({sel(metric, *matchers)}[{window}]))"


def ratio(metric: str, part: str, *, by: str = "") -> str:
    """The share of a counter's rate whose labels match ``part``.

    Without ``by``, a part that never happened counts as 0 (not as no data).
    """
    numerator = rate(metric, part, by=by)
    if not by:
        numerator = f"({numerator} or vector(0))"
    return f"{numerator}\n/\n{rate(metric, by=by)}"


def quantiles(metric: str, *matchers: str, by: str = "", legend: str = "") -> list[Target]:
    """p50, p95 and p99 of a histogram, over all pods."""
    group = ", ".join(("le", by)) if by else "le"
    return [
        Target(
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({sel(metric + '_bucket', *matchers)}[{WINDOW}])))",
            f"p{round(q * 100)}{legend}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def queue_gauge(metric: str, queues: str) -> str:
    """A broker gauge for the queues matching the regex ``queues``, one series per queue."""
    matcher = 'queue=~"' + queues + '"'
    return f"max by (queue) ({sel(metric, matcher)})"


def depth(queues: str) -> str:
    return queue_gauge("mailyard_broker_queue_messages", queues)


def consumers(queues: str) -> str:
    return queue_gauge("mailyard_broker_queue_consumers", queues)
