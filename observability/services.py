"""One dashboard per Mailyard service: a RED row, its specifics, its pods.

RED is rate (work done), errors (work refused, retried, parked or not
published) and duration (how long one piece of work takes). Broker metrics
carry a ``service`` label set by the process; pod-level metrics (``up``,
``process_*``) carry the ``component`` label set by the chart's PodMonitor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from observability import grafana
from observability.grafana import BAD, GOOD, JSON, WARN, Panel, Row, Target, dashboard, row
from observability.promql import (
    DELIVERY_QUEUES,
    WINDOW,
    consumers,
    depth,
    increase,
    quantiles,
    rate,
    ratio,
    sel,
)

PER_SECOND = "suffix:/s"
OUTCOME_COLORS = {"delivered": GOOD, "deferred": WARN, "failed": BAD}


# Service dashboards put three panels on a line unless told otherwise.
timeseries = partial(grafana.timeseries, width=8)


def _service(name: str) -> str:
    return f'service="{name}"'


def _component(name: str) -> str:
    return f'component="{name}"'


def consumer_rate(name: str, description: str, *extra: Target) -> Panel:
    return timeseries(
        "Rate: messages taken from its queues",
        description,
        Target(
            rate("mailyard_broker_consumed_total", _service(name), by="queue"),
            "taken from {{queue}}",
        ),
        *extra,
        unit=PER_SECOND,
    )


def consumer_errors(name: str, description: str, *extra: Target, width: int = 8) -> Panel:
    """Requeued deliveries, parked messages and failed publishes of a consuming service."""
    return timeseries(
        "Errors: requeued, parked, not published",
        description,
        Target(
            rate(
                "mailyard_broker_consumed_total",
                _service(name),
                'outcome!="acked"',
                by="queue, outcome",
            ),
            "{{queue}}: {{outcome}}",
        ),
        Target(
            rate("mailyard_parked_total", _service(name), by="queue, reason"),
            "parked from {{queue}}: {{reason}}",
        ),
        Target(
            rate("mailyard_broker_publish_failures_total", _service(name), by="reason"),
            "publish failed: {{reason}}",
        ),
        *extra,
        unit=PER_SECOND,
        width=width,
    )


def handle_duration(name: str, description: str, width: int = 8) -> Panel:
    return timeseries(
        "Duration: time to handle one message",
        description,
        *quantiles("mailyard_handle_seconds", _service(name), by="queue", legend=" {{queue}}"),
        unit="s",
        width=width,
    )


def queue_panels(queues: str, what: str, width: int = 8) -> tuple[Panel, Panel]:
    return (
        timeseries(
            "Its queues: depth",
            f"Messages ready in {what}. Bad: growing for more than a few minutes "
            "(MailyardQueueBacklogGrowing): this service does not keep up; add replicas or "
            "find what slows one message down (the duration panel).",
            Target(depth(queues), "{{queue}}"),
            width=width,
        ),
        timeseries(
            "Its queues: consumers",
            f"Consumers attached to {what}, as the broker reports them (one per process). "
            "Bad: 0 while messages wait (MailyardQueueNoConsumers), or fewer than the "
            "replicas you run.",
            Target(consumers(queues), "{{queue}}"),
            width=width,
        ),
    )


def pods_row(name: str) -> Row:
    """Targets, broker connection and resources of the service's pods."""
    return row(
        "Pods and broker",
        timeseries(
            "Targets up",
            "Pods of this service answering Prometheus, and pods scraped. Bad: 'up' below "
            "'scraped' (a pod that crashed, hangs or restarts), or both at 0 "
            f"(Mailyard{name.capitalize()}Down).",
            Target(f"sum({sel('up', _component(name))})", "up"),
            Target(f"count({sel('up', _component(name))})", "scraped"),
            colors={"up": GOOD},
            width=6,
        ),
        timeseries(
            "Broker connection per pod",
            "1 while the pod holds its RabbitMQ connection. Bad: 0 for more than a reconnect "
            "interval: that pod neither takes nor publishes messages (ingress answers 451).",
            Target(
                f"min by (pod) ({sel('mailyard_broker_connected', _service(name))})",
                "{{pod}}",
            ),
            max_value=1,
            width=6,
        ),
        timeseries(
            "CPU per pod",
            "CPU cores used. Bad: at the pod's CPU limit (throttling slows every reply and "
            "handling time rises), or one pod far above its siblings.",
            Target(
                f"sum by (pod) (rate({sel('process_cpu_seconds_total', _component(name))}"
                f"[{WINDOW}]))",
                "{{pod}}",
            ),
            width=6,
        ),
        timeseries(
            "Memory per pod",
            "Resident memory. Bad: close to the pod's memory limit (an OOM kill means "
            "redeliveries), or rising without ever falling (a leak).",
            Target(
                f"sum by (pod) ({sel('process_resident_memory_bytes', _component(name))})",
                "{{pod}}",
            ),
            unit="bytes",
            width=6,
        ),
    )


def ingress() -> list[Row]:
    refusals = "mailyard_ingress_rejected_total"
    red = row(
        "RED: rate, errors, duration",
        timeseries(
            "Rate: connections and accepted mail",
            "SMTP connections opened, messages accepted (250 after DATA: stored and confirmed "
            "by RabbitMQ) and their recipients. Bad: accepted messages dropping while "
            "connections keep coming (everything is refused), or everything at 0 while your "
            "applications send (ingress unreachable).",
            Target(rate("mailyard_ingress_connections_total"), "connections"),
            Target(rate("mailyard_ingress_accepted_total"), "messages"),
            Target(rate("mailyard_ingress_accepted_recipients_total"), "recipients"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Errors: refusals and failed publishes",
            "Commands refused, by stage and reason, and publishes RabbitMQ did not confirm. "
            "relay_denied and bad_recipient are policy at work. Bad: broker_unavailable or any "
            "publish failure (MailyardIngressBrokerUnavailable), too_many_sessions (the "
            "listener is full), or a sudden jump of one reason from a known client.",
            Target(rate(refusals, by="stage, reason"), "{{stage}}: {{reason}}"),
            Target(
                rate("mailyard_broker_publish_failures_total", _service("ingress"), by="reason"),
                "publish failed: {{reason}}",
            ),
            unit=PER_SECOND,
        ),
        timeseries(
            "Duration: end of DATA to broker confirm",
            "How long the client waits for its 250 while RabbitMQ replicates and confirms the "
            "message. Bad: p99 above ~1 s (the broker is short of disk, memory or network), "
            "or near broker.publish_timeout (15 s by default), after which clients get 451.",
            *quantiles("mailyard_ingress_store_seconds"),
            unit="s",
        ),
    )
    smtp = row(
        "SMTP sessions and messages",
        timeseries(
            "Open SMTP sessions per pod",
            "SMTP sessions open now. Bad: close to the session limit (too_many_sessions "
            "refusals follow), one pod holding most sessions (the load balancer does not "
            "spread them), or sessions piling up (slow clients, or slow broker confirms).",
            Target(f"sum by (pod) ({sel('mailyard_ingress_sessions')})", "{{pod}}"),
            width=6,
        ),
        timeseries(
            "Accepted bytes",
            "Bytes of accepted messages per second. Bad: a jump without a matching jump in "
            "messages (large attachments fill the broker's disk faster).",
            Target(rate("mailyard_ingress_accepted_bytes_total"), "accepted"),
            unit="Bps",
            width=6,
        ),
        timeseries(
            "Message size",
            "Size of accepted messages. Bad: p99 near ingress.max_message_size or the "
            "broker's max_message_size (larger mail is refused at SIZE or DATA).",
            *quantiles("mailyard_ingress_message_bytes"),
            unit="bytes",
            width=6,
        ),
        timeseries(
            "Inbound queue: depth",
            "Accepted messages waiting for the queue service. Bad: growing "
            "(MailyardQueueBacklogGrowing): accepted mail waits before anyone routes it.",
            Target(depth("inbound"), "{{queue}}"),
            width=6,
        ),
        timeseries(
            "Messages per publish (group commit)",
            "Messages stored with one publish and one confirm: those that finished DATA while "
            "earlier publishes awaited their confirm (ingress.group_commit). 1 when quiet, "
            "growing with the load; the broker works per publish, not per message. Bad: "
            "large batches at modest load (confirms are slow: look at the store duration).",
            *quantiles("mailyard_ingress_batch_messages"),
            width=12,
        ),
    )
    return [red, smtp, tls_and_auth()]


def tls_and_auth() -> Row:
    """Ingress's TLS, AUTH, limits and the files it re-reads (certificate, users)."""
    tls_sessions = "mailyard_ingress_tls_sessions_total"
    connections = rate("mailyard_ingress_connections_total")
    expiry = sel("mailyard_ingress_certificate_expiry_timestamp_seconds")
    return row(
        "TLS and AUTH",
        timeseries(
            "TLS sessions by version",
            "TLS handshakes completed per second, by listener role (STARTTLS on mx and "
            "submission, implicit TLS on submissions) and TLS version, and handshakes that "
            "failed or timed out. Bad: failures rising (a certificate clients refuse: expired, "
            "wrong name, incomplete chain; or clients that offer only protocol versions or "
            "ciphers we do not), or TLSv1.2 growing against TLSv1.3 from your own applications "
            "(an old client library).",
            Target(rate(tls_sessions, by="role, version"), "{{role}} {{version}}"),
            Target(rate("mailyard_ingress_tls_failures_total", by="role"), "failed: {{role}}"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Share of sessions in TLS",
            "TLS handshakes completed per SMTP connection. Most MTAs on the internet and every "
            "submission client use TLS; spam bots often do not. Bad: a drop from its usual "
            "level (STARTTLS failing or no longer offered: see the failures beside, and "
            "ingress.tls), or 0 with tls on.",
            Target(f"({rate(tls_sessions)} or vector(0))\n/\n{connections}", "in TLS"),
            unit="percentunit",
            max_value=1,
            colors={"in TLS": GOOD},
        ),
        grafana.stat(
            "Certificate expiry (days left)",
            "Days until the certificate ingress presents expires, for the pod whose certificate "
            "expires first (a pod that failed to re-read a renewed one shows here). Bad: under "
            "14 days (MailyardIngressCertificateExpiringSoon: the renewal is not happening, or "
            "its Secret does not reach the pods), under 3 days "
            "(MailyardIngressCertificateExpiryImminent). 'no certificate': TLS is off.",
            Target(f"(min({expiry} > 0) - time()) / 86400", "days left"),
            thresholds=((BAD, None), (WARN, 3), (GOOD, 14)),
            no_value="no certificate",
            width=8,
            height=8,
        ),
        timeseries(
            "AUTH results",
            "SMTP AUTH attempts per second by result: success, failure (wrong user or "
            "password), locked_out (an address turned away after ingress.limits.auth_failures "
            "failures). Bad: failures and lock-outs far above successes "
            "(MailyardIngressAuthFailureStorm: someone guesses passwords, or an application "
            "kept an old password), or successes falling to 0 while your applications send "
            "(the users file changed: see the reloads).",
            Target(rate("mailyard_ingress_auth_total", by="result"), "{{result}}"),
            unit=PER_SECOND,
            colors={"success": GOOD, "failure": WARN, "locked_out": BAD},
        ),
        timeseries(
            "Limit hits by reason",
            "Sessions or commands stopped by an ingress.limits rule or a protocol check. "
            "early_talker, pipelining_before_ehlo and bare_newline are mostly spam software "
            "at work on port 25. Bad: connections_per_client, connection_rate or auth_failures "
            "from your own applications (raise the limit, or put them in relay_networks), "
            "data_memory (the pods' DATA memory budget is full: add replicas or raise "
            "ingress.limits.data_memory with the memory limit), min_data_rate or "
            "tls_handshake_timeout rising (slow networks, or a slow-loris attack).",
            Target(rate("mailyard_ingress_limit_hits_total", by="reason"), "{{reason}}"),
            unit=PER_SECOND,
        ),
        timeseries(
            "File reloads by key and result",
            "Watched files read again after they changed, e.g. when the kubelet updated a "
            "mounted Secret: the certificate and the users file here, and from the other "
            "services the DKIM keys (queue), the relay password and the CA bundle (delivery). "
            "ok: the new version is in use. "
            "Bad: any failed (the new version cannot be loaded and the old one stays in use: "
            "MailyardFileReloadFailing), or no ok reload after you renewed a certificate or "
            "changed a user (the Secret does not reach the pods).",
            Target(
                increase("mailyard_file_reloads_total", by="key, result", window=WINDOW),
                "{{key}}: {{result}}",
            ),
        ),
    )


def queue() -> list[Row]:
    red = row(
        "RED: rate, errors, duration",
        consumer_rate(
            "queue",
            "Accepted messages taken from inbound (split into jobs) and deferred jobs taken "
            "from deferred (rescheduled). Bad: 0 while inbound or deferred holds messages "
            "(consumers gone or stuck), or flat at a ceiling while inbound grows (add replicas).",
            Target(rate("mailyard_queue_messages_total"), "messages split"),
        ),
        consumer_errors(
            "queue",
            "Messages handed back to the broker, parked, or whose output RabbitMQ did not "
            "confirm. Bad: anything parked (a message it cannot decode or route), steady "
            "requeues (one message failing again and again until it is parked), publish "
            "failures (the broker refuses or is slow to confirm).",
        ),
        handle_duration(
            "queue",
            "From taking a message to its ack, once every job made from it is confirmed. Bad: "
            "p99 of seconds (the broker is slow to confirm) or rising with the inbound depth.",
        ),
    )
    routing = row(
        "Routing, retries and lifetime",
        timeseries(
            "Jobs and recipients routed",
            "Delivery jobs made (one per destination domain) and recipients routed, remote or "
            "local (ingress.local_domains). Bad: local jobs when you expect none (someone "
            "mails the bounce domain), or jobs per message far above usual (huge envelopes).",
            Target(rate("mailyard_queue_jobs_total", by="destination"), "jobs: {{destination}}"),
            Target(
                rate("mailyard_queue_recipients_total", by="destination"),
                "recipients: {{destination}}",
            ),
            unit=PER_SECOND,
        ),
        timeseries(
            "Retries by delay",
            "Deferred jobs put on each rung of the retry ladder (queue.retry_delays). Bad: the "
            "long delays busy (mail that has kept failing for hours, about to expire), or a "
            "jump of first retries (a destination started deferring us).",
            Target(rate("mailyard_queue_retries_total", by="delay"), "{{delay}}"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Given up and dropped",
            "Jobs and recipients given up because the message outlived queue.max_lifetime "
            "(senders get an 'expired' DSN), repeated envelope recipients dropped, and "
            "recipients held back by the suppression list (the Bounce dashboard has them by "
            "source). Bad: any expiry (mail that could not be delivered for days).",
            Target(rate("mailyard_queue_expired_total"), "jobs expired"),
            Target(rate("mailyard_queue_expired_recipients_total"), "recipients expired"),
            Target(
                rate("mailyard_queue_duplicate_recipients_total"), "duplicate recipients dropped"
            ),
            Target(rate("mailyard_queue_suppressed_total"), "recipients suppressed"),
            unit=PER_SECOND,
            colors={"jobs expired": BAD, "recipients expired": BAD},
        ),
        *queue_panels("inbound|deferred", "inbound and deferred, the queues it consumes"),
        timeseries(
            "Jobs per delivery publish",
            "Jobs for one destination sent to delivery as one batch (queue.delivery_batch): "
            "those split from messages accepted together. Larger batches cost the broker "
            "less per email; a delivery pod killed mid-batch gets the whole batch back. "
            "Bad: large batches while delivery is slow (a restart then redelivers many "
            "jobs; lower queue.delivery_batch.max_jobs).",
            *quantiles("mailyard_queue_delivery_batch_jobs"),
        ),
        timeseries(
            "Retry ladder: depth",
            "Deferred jobs waiting out their delay (retry.<delay> TTL queues): mail is "
            "expected here. Bad: every rung growing at once (a large destination is down), or "
            "the last rungs filling (mail about to expire).",
            Target(depth("retry.+"), "{{queue}}"),
        ),
    )
    return [red, routing]


def delivery() -> list[Row]:
    recipients = "mailyard_delivery_recipients_total"
    destinations = "mailyard_delivery_destination_recipients_total"
    red = row(
        "RED: rate, errors, duration",
        timeseries(
            "Rate: attempts and recipient outcomes",
            "Delivery attempts (one job: one domain, its recipients) and what each recipient "
            "got. Bad: attempts at 0 while the delivery queue holds jobs, or delivered falling "
            "while deferred and failed rise.",
            Target(rate("mailyard_delivery_jobs_total"), "attempts"),
            Target(rate(recipients, by="outcome"), "{{outcome}}"),
            unit=PER_SECOND,
            colors=OUTCOME_COLORS,
        ),
        timeseries(
            "Errors: deferred, failed, DNS and hosts",
            "Recipients deferred or failed by reply class, DNS failures finding a destination "
            "by kind, hosts skipped before MAIL FROM (refused, timeout, bad greeting, TLS) and "
            "attempts cut off at delivery.attempt_timeout. Bad: 5xx rising "
            "(MailyardDeliveryFailureRatioHigh), 4xx rising "
            "(MailyardDeliveryDeferralRatioHigh), servfail/timeout DNS failures (our resolver "
            "is sick), any deadline exceeded.",
            Target(
                rate(recipients, 'outcome!="delivered"', by="outcome, status_class"),
                "{{outcome}} {{status_class}}",
            ),
            Target(rate("mailyard_delivery_route_failures_total", by="kind"), "DNS: {{kind}}"),
            Target(rate("mailyard_delivery_host_failures_total"), "hosts skipped"),
            Target(rate("mailyard_delivery_deadline_exceeded_total"), "deadline exceeded"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Duration: one delivery attempt",
            "From the MX lookup to the last reply of one attempt. Bad: p99 near "
            "delivery.attempt_timeout (10 min by default: attempts get cut off), or rising for "
            "everyone (our DNS or our network), not just for one slow destination.",
            *quantiles("mailyard_delivery_attempt_seconds"),
            unit="s",
        ),
    )
    smtp = row(
        "SMTP, TLS and destinations",
        timeseries(
            "Accept-to-delivery latency",
            "From ingress's 250 to the remote 250, per delivered recipient; retried mail "
            "counts, so p99 may be hours. Bad: p50 above a few seconds with empty queues, or "
            "p95 rising with the delivery queue.",
            *quantiles("mailyard_delivery_latency_seconds"),
            unit="s",
        ),
        timeseries(
            "Jobs in flight per pod",
            "Jobs being delivered now. Bad: pinned at delivery.concurrency (100 by default) "
            "while the delivery queue grows: the pods are saturated; add replicas.",
            Target(f"sum by (pod) ({sel('mailyard_delivery_in_flight')})", "{{pod}}"),
        ),
        timeseries(
            "SMTP sessions",
            "Outbound sessions opened (with and without TLS), transactions on a reused "
            "session, and sessions kept idle for reuse. Bad: reuse near 0 at high volume to the "
            "same providers (connection churn invites throttling), or sessions opened without "
            "TLS rising.",
            Target(
                rate("mailyard_delivery_sessions_opened_total", by="tls"), "opened, tls={{tls}}"
            ),
            Target(rate("mailyard_delivery_sessions_reused_total"), "reused"),
            Target(f"sum({sel('mailyard_delivery_idle_sessions')})", "idle now"),
        ),
        timeseries(
            "TLS share of SMTP transactions",
            "Share of transactions made over STARTTLS. Bad: a drop from its usual level "
            "(STARTTLS failing: see hosts skipped and the delivery logs).",
            Target(ratio("mailyard_delivery_transactions_total", 'tls="yes"'), "over TLS"),
            unit="percentunit",
            max_value=1,
            colors={"over TLS": GOOD},
        ),
        timeseries(
            "Not delivered, by destination",
            "Recipients deferred or failed per mailbox provider (metrics.destinations; the "
            "rest is 'other'). Bad: one provider standing out: it throttles, greylists or "
            "blocks us; read its replies in the delivery logs and its postmaster pages.",
            Target(
                rate(destinations, 'outcome!="delivered"', by="destination, outcome"),
                "{{destination}} {{outcome}}",
            ),
            unit=PER_SECOND,
        ),
        timeseries(
            "Possible duplicates",
            "Jobs delivered again after an earlier attempt may have reached the remote 250 "
            "(a crash between the 250 and the ack). Bad: anything but rare spikes at restarts: "
            "pods are killed mid-delivery (OOM, a too short terminationGracePeriodSeconds).",
            Target(rate("mailyard_delivery_possible_duplicates_total"), "redelivered jobs"),
            unit=PER_SECOND,
        ),
    )
    work = row(
        "The delivery lanes",
        *queue_panels(
            DELIVERY_QUEUES,
            "the delivery lanes (delivery: transactional, delivery.<class>: the other classes)",
            width=6,
        ),
        consumer_errors(
            "delivery",
            "Jobs handed back to the broker, parked, or whose events and retries RabbitMQ did "
            "not confirm. Bad: anything parked, steady requeues, publish failures.",
            width=6,
        ),
        handle_duration(
            "delivery",
            "From taking a job to its ack (the attempt plus publishing its events). Bad: "
            "far above the attempt duration (the broker is slow to confirm).",
            width=6,
        ),
    )
    return [red, smtp, *shaping(), outbound_tls_and_dkim(), work]


# delivery/limits.py and delivery/metrics.py: the shaping gauges and counters carry a
# bounded `destination` label (a key of delivery.shaping.destinations or
# metrics.destinations: a domain or a site pattern such as *.google.com; else other).
SHAPING = "mailyard_delivery_shaping"
ONE_DESTINATION = 'destination=~"$destination"'


def destination_variable() -> JSON:
    """The shaping destinations, for the row repeated per destination."""
    return grafana.query_variable(
        "destination",
        "Destination",
        f"label_values({sel(SHAPING + '_limit')}, destination)",
        multi=True,
    )


def throttled_share(*matchers: str) -> str:
    """Throttling replies per SMTP transaction, by destination (at most 1: a destination
    that refuses at the greeting throttles without a transaction)."""
    throttled = rate(f"{SHAPING}_throttled_total", *matchers, by="destination")
    sent = rate(f"{SHAPING}_messages_total", *matchers, by="destination")
    return f"clamp_max(\n{throttled}\n/\n{sent},\n1)"


def effective_limit(limit: str, *matchers: str) -> str:
    """The cluster-wide limit after backoff: every replica exports the same, hence max."""
    selector = sel(SHAPING + "_limit", *matchers, 'limit="' + limit + '"')
    return f"max by (destination, limit) ({selector})"


def shaping() -> list[Row]:
    """Traffic shaping: the limits all delivery replicas share, then a row per destination."""
    cluster = row(
        "Traffic shaping",
        timeseries(
            "Replicas sharing the limits",
            "Delivery replicas each process counts in the membership that shares the "
            "destinations' limits (each takes its part of every limit), against the delivery "
            "pods Prometheus sees up. Bad: members below the pods up for more than a minute "
            "(a replica that does not see the others takes too big a part: together they "
            "exceed the limits), above them (a replica that died is still counted until its "
            "heartbeat expires: the others take less than they may), or max and min apart "
            "for long (the replicas disagree).",
            Target(f"max({sel(SHAPING + '_members')})", "members (max)"),
            Target(f"min({sel(SHAPING + '_members')})", "members (min)"),
            Target(f"sum({sel('up', _component('delivery'))})", "delivery pods up"),
            colors={"delivery pods up": GOOD},
            width=6,
        ),
        timeseries(
            "Paused destinations",
            "1 while a destination is paused after a run of throttling replies: its jobs wait "
            "in the retry ladder, none is tried, until the pause ends and a few are tried "
            "again. Bad: a destination at 1 for more than a few minutes, or pausing again "
            "and again (MailyardDeliveryDestinationPaused): it refuses our rate or our "
            "reputation.",
            Target(f"max by (destination) ({sel(SHAPING + '_paused')})", "{{destination}}"),
            width=6,
        ),
        timeseries(
            "Jobs held back, by reason",
            "Jobs put back on the retry ladder without an attempt: busy (the destination's "
            "sessions or rate are all in use: the job waits its turn, which is no failed "
            "attempt), paused (the destination is paused), no_share (this replica has no "
            "part of the limit: more replicas than the limit allows). Bad: paused steadily, "
            "no_share steadily (fewer delivery replicas would do), or busy growing for a "
            "destination whose limits you could raise.",
            Target(rate(f"{SHAPING}_held_total", by="reason"), "{{reason}}"),
            unit=PER_SECOND,
            colors={"paused": BAD, "no_share": WARN},
            width=6,
        ),
        timeseries(
            "Throttling replies per transaction",
            "Replies that matched a throttling rule (421, 4.7.x, 'rate limited', 'too many "
            "connections') per SMTP transaction sent, by destination. Each one lowers that "
            "destination's limits for a while. Bad: above 10% for 15 minutes "
            "(MailyardDeliveryDestinationThrottled): its limits are too high for it, or our "
            "reputation there is poor.",
            Target(throttled_share(), "{{destination}}"),
            unit="percentunit",
            max_value=1,
            width=6,
        ),
    )
    per_destination = row(
        "Destination: $destination",
        timeseries(
            "Sessions and connection limit",
            "SMTP sessions open to this destination from all delivery replicas (in use and "
            "idle for reuse: the receiver counts both), next to the effective max_connections "
            "of all replicas together (delivery.shaping, lowered after throttling replies). "
            "Bad: sessions above the limit for more than a moment (the replicas do not share "
            "it: see Replicas sharing the limits), or the limit held far below the configured "
            "one (the destination keeps throttling us).",
            Target(
                f"sum by (destination) ({sel(SHAPING + '_sessions', ONE_DESTINATION)})",
                "sessions",
            ),
            Target(effective_limit("connections", ONE_DESTINATION), "limit"),
            colors={"limit": BAD},
        ),
        timeseries(
            "Messages per second and rate limit",
            "SMTP transactions sent to this destination per second by all replicas, next to "
            "the effective max_messages_per_second (none: no rate limit). Bad: the rate "
            "above the limit (replicas not sharing it), or pinned at it while the delivery "
            "lanes grow (the limit, not the pods, sets the pace: raise it only if the "
            "destination accepts more).",
            Target(rate(f"{SHAPING}_messages_total", ONE_DESTINATION, by="destination"), "sent"),
            Target(effective_limit("messages_per_second", ONE_DESTINATION), "limit"),
            unit=PER_SECOND,
            colors={"limit": BAD},
        ),
        timeseries(
            "Throttling replies",
            "Replies from this destination that matched a throttling rule (421, 4.7.x, 'rate "
            "limited', 'too many connections'), per second; each lowers its limits for a "
            "while. Bad: a steady stream (the limits keep halving: they are too high for it, "
            "or our reputation there is poor).",
            Target(
                rate(f"{SHAPING}_throttled_total", ONE_DESTINATION, by="destination"),
                "throttling replies",
            ),
            unit=PER_SECOND,
            colors={"throttling replies": WARN},
        ),
        timeseries(
            "Share of transactions throttled",
            "Throttling replies per transaction sent to this destination. Bad: above 10% for "
            "15 minutes (MailyardDeliveryDestinationThrottled); check its postmaster tools "
            "before raising any limit.",
            Target(throttled_share(ONE_DESTINATION), "throttled"),
            unit="percentunit",
            max_value=1,
        ),
        timeseries(
            "Paused",
            "1 while this destination is paused after a run of throttling replies: its jobs "
            "wait in the retry ladder. Bad: 1 for more than a few minutes, or again and again "
            "(MailyardDeliveryDestinationPaused).",
            Target(f"max by (destination) ({sel(SHAPING + '_paused', ONE_DESTINATION)})", "paused"),
            colors={"paused": BAD},
        ),
        timeseries(
            "Jobs held back",
            "Jobs for this destination put back on the retry ladder without an attempt, by "
            "reason: busy (its limits are in use), paused, no_share (this replica has no part "
            "of the limit). Bad: paused or no_share steadily, or busy rising while its "
            "sessions stay below the limit.",
            Target(
                rate(f"{SHAPING}_held_total", ONE_DESTINATION, by="destination, reason"),
                "{{reason}}",
            ),
            unit=PER_SECOND,
            colors={"paused": BAD, "no_share": WARN},
        ),
        repeat="destination",
    )
    return [cluster, per_destination]


def outbound_tls_and_dkim() -> Row:
    """What the TLS policies got from each session, TLS reports, and DKIM signing (by queue)."""
    sessions = "mailyard_delivery_tls_sessions_total"
    # Policies that require TLS (verify; MTA-STS enforce; DANE): the only ones whose
    # sessions can fail on TLS rather than fall back to clear text.
    verifying = 'policy!~"opportunistic|none"'
    failed = rate(sessions, verifying, 'result="failed"', by="policy")
    tried = rate(sessions, verifying, by="policy")
    opportunistic = 'policy="opportunistic"'
    clear = rate(sessions, opportunistic, 'result="clear"')
    return row(
        "Outbound TLS and DKIM",
        timeseries(
            "TLS sessions by policy and result",
            "Outbound sessions opened per second, by the TLS policy that applied "
            "(delivery.tls, delivery.tls_policies, the smarthost's tls, mta-sts, dane) and "
            "what came of it: verified (certificate checked: against a CA and the MX name, "
            "or under dane against the host's TLSA records), unverified (encrypted, not "
            "checked), clear, or failed (TLS was required and could not be had: the host is "
            "skipped, the mail deferred, never sent in clear). Bad: failed rising "
            "(MailyardDeliveryTlsVerificationFailing), or clear growing under opportunistic "
            "(STARTTLS no longer offered, or handshakes failing and falling back).",
            Target(rate(sessions, by="policy, result"), "{{policy}}: {{result}}"),
            unit=PER_SECOND,
            width=6,
        ),
        timeseries(
            "TLS falling short of its policy",
            "Share of the sessions of each verifying policy that failed, and share of "
            "opportunistic sessions that went in clear. Bad: any lasting failed share "
            "(a destination's certificate expired or does not match its MX name, a CA missing "
            "from delivery.tls_ca_file, a certificate its TLSA records do not match, STARTTLS "
            "gone: its mail waits on the retry ladder), or the clear share jumping from its "
            "usual level.",
            Target(f"(\n{failed}\nor\n{tried} * 0\n)\n/\n{tried}", "{{policy}}: failed"),
            Target(
                f"({clear} or vector(0))\n/\n{rate(sessions, opportunistic)}",
                "opportunistic: clear",
            ),
            unit="percentunit",
            max_value=1,
            width=6,
        ),
        tls_reports(),
        timeseries(
            "DANE: TLSA lookups by result",
            "MX hosts about to be tried, with delivery.dane.enabled, by what DNSSEC said of "
            "their TLSA records: secure (DANE applies: TLS required, the certificate matched "
            "against the records), none (authenticated: there are none), insecure (not "
            "signed, or the host's addresses were not: DANE does not apply), failed (SERVFAIL "
            "or no answer: the host is skipped and its mail waits). Bad: failed rising (a "
            "destination's DNSSEC is broken, or the resolver in delivery.nameservers is), or "
            "only insecure while mail flows (the resolver does not validate: it never sets "
            "AD, and DANE never applies). All 0 with DANE off.",
            Target(rate("mailyard_delivery_dane_lookups_total", by="result"), "{{result}}"),
            unit=PER_SECOND,
            colors={"failed": BAD, "secure": GOOD},
        ),
        timeseries(
            "DKIM: messages signed and unsigned",
            "Messages the queue service signed, per signing domain (d=; a message signed "
            "for two domains counts for each), and messages it sent on unsigned although "
            "dkim.keys is set: no_key (no key covers the From: domain), no_from (no single "
            "From: address), error (a key covers it but none could sign). Bad: any error "
            "(MailyardQueueDkimSigningFailing: that mail fails DMARC at the receivers), a "
            "domain's signed rate dropping to 0 while it sends, or no_key for a domain you "
            "send from (add a key for it).",
            Target(rate("mailyard_queue_dkim_signed_total", by="domain"), "signed: {{domain}}"),
            Target(rate("mailyard_queue_dkim_unsigned_total", by="reason"), "unsigned: {{reason}}"),
            unit=PER_SECOND,
            colors={"unsigned: error": BAD},
            width=6,
        ),
    )


def tls_reports() -> Panel:
    """RFC 8460 reports: they go out in one burst per interval (a day), hence hourly counts."""
    reports = "mailyard_delivery_tlsrpt_reports_total"
    return timeseries(
        "TLS reports (RFC 8460)",
        "With delivery.tlsrpt.enabled: TLS reports sent in the last hour, by method (mailto: "
        "queued on inbound for our own delivery; https: POSTed) and result, _smtp._tls "
        "lookups that failed (that domain's report is lost), and counts dropped because "
        "max_domains or max_failure_details was reached. Reports leave once per interval "
        "(a day, just after 00:00 UTC), so this is a spike a day. Bad: failed as high as "
        "sent (MailyardDeliveryTlsReportsFailing: egress to 443 blocked, a CA bundle "
        "without the public roots, inbound refusing the mail), failed lookups, or any "
        "dropped (raise the caps).",
        Target(increase(reports, by="method, result", window="1h"), "{{method}}: {{result}}"),
        Target(
            increase("mailyard_delivery_tlsrpt_lookups_total", 'result="failed"', window="1h"),
            "TXT lookups failed",
        ),
        Target(
            increase("mailyard_delivery_tlsrpt_dropped_total", by="kind", window="1h"),
            "dropped: {{kind}}",
        ),
        colors={"mailto: failed": BAD, "https: failed": BAD},
        width=6,
    )


def bounce() -> list[Row]:
    red = row(
        "RED: rate, errors, duration",
        consumer_rate(
            "bounce",
            "Events taken from bounce (failed, expired, suppressed, delayed, relayed), mail for "
            "the local domains taken from local, and DSNs queued by action. Bad: 0 while the "
            "bounce queue holds events (consumers gone or stuck).",
            Target(rate("mailyard_bounce_dsns_total", by="kind"), "DSNs queued: {{kind}}"),
        ),
        consumer_errors(
            "bounce",
            "Events handed back to the broker, parked, or DSNs RabbitMQ did not confirm. Bad: "
            "anything parked (an event it cannot turn into a DSN), steady requeues, publish "
            "failures (DSNs not stored).",
        ),
        handle_duration(
            "bounce",
            "From taking an event to its ack: the DSN window (bounce.dsn_window, in which the "
            "notices of one message gather), building the DSN and storing it on inbound. A p99 "
            "near the window is by design. Bad: p99 well above it (the broker is slow to "
            "confirm).",
        ),
    )
    dsns = row(
        "Delivery status notifications",
        timeseries(
            "Failures in, DSNs out",
            "Recipients that failed, expired or were held back by the suppression list, against "
            "the recipients reported in DSNs (also delayed and relayed notices). The failures "
            "follow each other (minus mail sent with a null sender or NOTIFY=NEVER). Bad: DSNs "
            "lagging behind for long (the bounce queue grows).",
            Target(
                rate("mailyard_delivery_recipients_total", 'outcome="failed"'), "failed recipients"
            ),
            Target(rate("mailyard_queue_expired_recipients_total"), "expired recipients"),
            Target(rate("mailyard_queue_suppressed_total"), "suppressed recipients"),
            Target(
                rate("mailyard_bounce_dsn_recipients_total", by="kind"),
                "reported in DSNs: {{kind}}",
            ),
            unit=PER_SECOND,
        ),
        timeseries(
            "Failures without a DSN",
            "Events that got no DSN, by reason (null_sender: never a DSN to <>; "
            "not_requested: NOTIFY asked for none of this kind). Bad: null_sender rising: DSNs "
            "themselves bounce (senders' domains refuse mail) or applications send with an "
            "empty envelope sender.",
            Target(rate("mailyard_bounce_dsns_skipped_total", by="reason"), "{{reason}}"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Mail for the local domains",
            "Messages received for ingress.local_domains: asynchronous bounces and replies. "
            "Bad: a storm after a bulk send (a bad list bouncing late), or steady traffic you "
            "did not expect there.",
            Target(rate("mailyard_bounce_local_messages_total"), "messages"),
            unit=PER_SECOND,
        ),
        *queue_panels("bounce|local", "bounce and local, the queues it consumes", width=12),
    )
    complaints = increase("mailyard_bounce_complaints_total", window="1h")
    delivered = increase("mailyard_delivery_recipients_total", 'outcome="delivered"', window="1h")
    reports = row(
        "Asynchronous bounces and complaints",
        timeseries(
            "Asynchronous reports by result",
            "Mail for the local domains, per envelope recipient, by what the bounce service "
            "made of it: bounced (a bounce to our VERP address: a bounced event), complained "
            "(an ARF report: a complained event), delayed (a delay warning), not_a_bounce "
            "(auto-replies, replies), unsigned (a bounce to an address that is no VERP "
            "address of ours), unparsable, forged (a VERP address whose HMAC failed). Bad: "
            "forged rising (someone tries to get addresses suppressed, or the VERP secret "
            "changed without keeping the old one as a second line), unparsable or unsigned "
            "rising (a provider's new format; bounces to a return path VERP does not make).",
            Target(rate("mailyard_bounce_async_total", by="result"), "{{result}}"),
            unit=PER_SECOND,
            colors={"forged": BAD, "unparsable": WARN, "unsigned": WARN, "complained": BAD},
        ),
        timeseries(
            "Complaints by feedback type",
            "ARF complaints from the feedback loops (Yahoo, Microsoft, AOL, …; Gmail sends "
            "none), by Feedback-Type. Bad: any fraud or virus (a compromised sender), abuse "
            "following a campaign (see the complaint rate).",
            Target(
                rate("mailyard_bounce_complaints_total", by="feedback_type"), "{{feedback_type}}"
            ),
            unit=PER_SECOND,
        ),
        grafana.stat(
            "Complaint rate (1h)",
            "Complaints over the last hour against recipients delivered. Bad: above 0.1% "
            "(Gmail's recommendation); above 0.3% MailyardBounceComplaintRateHigh fires "
            "(Gmail's limit for bulk senders).",
            Target(f"({complaints} or vector(0))\n/\n{delivered}", "complaints / delivered"),
            unit="percentunit",
            thresholds=((GOOD, None), (WARN, 0.001), (BAD, 0.003)),
            width=8,
            height=8,
        ),
    )
    return [red, dsns, classes(), reports, suppression()]


GONE = 'class=~"InvalidRecipient|BadDomain|InactiveMailbox"'


def classes() -> Row:
    """What the failures mean for the sender: mailyard/classify.py's classes."""
    hard = increase(
        "mailyard_bounce_suppressions_added_total", 'source="bounce"', GONE, window="1h"
    )
    attempted = increase(
        "mailyard_delivery_recipients_total", 'outcome=~"delivered|failed"', window="1h"
    )
    return row(
        "Bounces by class",
        timeseries(
            "Failed recipients by class",
            "Permanent failures by bounce class (InvalidRecipient, SpamBlock, "
            "AuthenticationFailed, ...; the rules are rules/bounces.yaml and "
            "bounce.classification.rules_files). Bad: InvalidRecipient, BadDomain or "
            "InactiveMailbox rising after a send (a stale list), SpamBlock or "
            "AuthenticationFailed at all (reputation, SPF/DKIM/DMARC).",
            Target(
                rate("mailyard_delivery_classified_total", 'outcome="failed"', by="class"),
                "{{class}}",
            ),
            unit=PER_SECOND,
        ),
        timeseries(
            "Deferred recipients by class",
            "Temporary failures by bounce class. Bad: SpamBlock or TransientFailure from one "
            "provider climbing (throttling: slow down before it turns into blocks).",
            Target(
                rate("mailyard_delivery_classified_total", 'outcome="deferred"', by="class"),
                "{{class}}",
            ),
            unit=PER_SECOND,
        ),
        grafana.stat(
            "Hard-bounce rate (1h)",
            "Addresses the suppression list took for hard bounces (InvalidRecipient, BadDomain, "
            "InactiveMailbox, at delivery or bounced later) against recipients delivered or "
            "failed, over the last hour. Bad: above 2%; MailyardBounceHardBounceRateHigh fires "
            "above monitoring.prometheusRule.hardBounceRate (5% by default).",
            Target(f"({hard} or vector(0))\n/\n{attempted}", "hard bounces / attempted"),
            unit="percentunit",
            thresholds=((GOOD, None), (WARN, 0.02), (BAD, 0.05)),
            width=8,
            height=8,
        ),
    )


def suppression() -> Row:
    """The suppression list: what is on it, what goes on it, what it holds back, by source.

    The contract for the later row of bounces by class, suppressions by source
    and complaint rate: these panels keep their titles and their ``source`` series.
    """
    # Every queue and bounce process holds the same list: max, never sum.
    entries = f"max by (source) ({sel('mailyard_suppression_entries')})"
    return row(
        "Suppression list",
        timeseries(
            "Suppressions by source: entries in force",
            "Addresses on the suppression list, by source (bounce: hard bounces and expiry "
            "strikes, complaint, unsubscribe, manual: mailyard suppression add). Entries "
            "leave by themselves at their expiry. Bad: a jump of bounce entries after a "
            "send (a list with many dead addresses), complaint entries climbing (recipients "
            "call the mail spam: look at what was sent and to whom).",
            Target(entries, "{{source}}"),
        ),
        timeseries(
            "Suppressions by source: added",
            "Entries the bounce service adds, by source and bounce class (InvalidRecipient, "
            "BadDomain, InactiveMailbox; MessageExpired after suppression.expired_strikes "
            "expiries in a row), and expiry strikes counted towards one. Bad: a burst during "
            "a bulk send (a stale list), or complaints at all.",
            Target(
                rate("mailyard_bounce_suppressions_added_total", by="source, class"),
                "{{source}} {{class}}",
            ),
            Target(rate("mailyard_bounce_suppression_strikes_total"), "expiry strikes"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Suppressions by source: recipients not sent to",
            "Recipients the queue service held back because the list holds them, by the "
            "entry's source; their senders get a 5.7.1 DSN unless they asked for none. Bad: "
            "a large share of the recipients routed (an application keeps mailing addresses "
            "that bounced: it should clean its list), or 0 right after an entry was added "
            "for an address that still gets mail (the queue does not follow the log).",
            Target(rate("mailyard_queue_suppressed_total", by="source"), "{{source}}"),
            Target(rate("mailyard_queue_recipients_total", 'destination="remote"'), "routed"),
            unit=PER_SECOND,
        ),
        timeseries(
            "Suppression log: followed, and the cost of a start",
            "1 per queue and bounce process that follows the suppression log (changes reach "
            "it within seconds), and how long each took at its last start to read the log "
            "(from the latest snapshot, suppression.snapshot_interval). Bad: a process at 0 "
            "for minutes (MailyardSuppressionLogNotFollowed), or start-up seconds growing "
            "day after day (no snapshots written: is the bounce service running?).",
            Target(
                f"sum by (service) ({sel('mailyard_suppression_following')})",
                "following: {{service}}",
            ),
            Target(
                f"max by (service) ({sel('mailyard_suppression_replay_seconds')})",
                "start-up seconds: {{service}}",
            ),
        ),
    )


SERVICES: dict[str, tuple[str, Callable[[], list[Row]]]] = {
    "ingress": ("the SMTP server: accepts mail and stores it on the broker", ingress),
    "queue": ("the policy brain: splits mail into delivery jobs, schedules retries", queue),
    "delivery": ("the SMTP client: MX lookup and delivery to the remote servers", delivery),
    "bounce": ("DSNs to the senders of failed mail; mail for the local domains", bounce),
}


# Variables of one service's board, after the namespace.
VARIABLES: dict[str, Callable[[], list[JSON]]] = {"delivery": lambda: [destination_variable()]}


def board(name: str, *variables: JSON) -> JSON:
    what, rows = SERVICES[name]
    variables = (*variables, *VARIABLES.get(name, list)())
    return dashboard(
        uid=f"mailyard-{name}",
        title=f"Mailyard / {name.capitalize()}",
        description=f"Mailyard {name}: {what}.",
        tags=("mailyard",),
        rows=[*rows(), pods_row(name)],
        variables=variables,
    )
