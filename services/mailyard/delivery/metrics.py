"""Delivery metrics. Labels are bounded: outcomes, reply classes, failure kinds."""

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("mailyard_delivery_jobs_total", "Delivery attempts made (one job, one domain)")
RECIPIENTS = Counter(
    "mailyard_delivery_recipients_total",
    "Per-recipient outcomes of delivery attempts",
    ["outcome", "status_class"],  # delivered|deferred|failed, 2xx|4xx|5xx
)
DESTINATION_RECIPIENTS = Counter(
    "mailyard_delivery_destination_recipients_total",
    "Per-recipient outcomes for the mailbox providers in metrics.destinations "
    "(every other domain is 'other')",
    ["destination", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "mailyard_delivery_attempt_seconds",
    "Duration of one delivery attempt, DNS to last reply",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
)
LATENCY_SECONDS = Histogram(
    "mailyard_delivery_latency_seconds",
    "From acceptance by ingress to the remote server's 250, per recipient",
    buckets=(
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        900,
        3600,
        14400,
        86400,
    ),
)
ROUTE_FAILURES = Counter(
    "mailyard_delivery_route_failures_total",
    "DNS failures finding a destination, by kind",
    ["kind"],  # nxdomain, null_mx, no_address, servfail, timeout
)
HOST_FAILURES = Counter(
    "mailyard_delivery_host_failures_total",
    "Hosts skipped before MAIL FROM (refused, timeout, bad greeting, TLS)",
)
SESSIONS_OPENED = Counter(
    "mailyard_delivery_sessions_opened_total",
    "SMTP sessions opened, by TLS and by the egress address they were bound to "
    "(one of delivery.source_addresses, or default when none is configured)",
    ["tls", "source"],
)
SESSIONS_REUSED = Counter(
    "mailyard_delivery_sessions_reused_total", "Transactions on a reused SMTP session"
)
IDLE_SESSIONS = Gauge("mailyard_delivery_idle_sessions", "SMTP sessions kept open for reuse")
TRANSACTIONS = Counter(
    "mailyard_delivery_transactions_total", "SMTP transactions, by encryption", ["tls"]
)
IN_FLIGHT = Gauge(
    "mailyard_delivery_in_flight", "Jobs being delivered now, or waiting their turn in a batch"
)
POSSIBLE_DUPLICATES = Counter(
    "mailyard_delivery_possible_duplicates_total",
    "Redelivered jobs (an earlier attempt may have reached the remote 250 before a crash)",
)
DEADLINE_EXCEEDED = Counter(
    "mailyard_delivery_deadline_exceeded_total", "Attempts cut off at delivery.attempt_timeout"
)
SKIPPED_HERE = Counter(
    "mailyard_delivery_repeats_skipped_total",
    "Copies of a job this process had just finished itself (a message split again)",
)
TLS_SESSIONS = Counter(
    "mailyard_delivery_tls_sessions_total",
    "Outbound sessions opened, by the TLS policy that applied and what came of it "
    "(verified, unverified, clear, failed)",
    ["policy", "result"],
)
MTA_STS_FETCHES = Counter(
    "mailyard_delivery_mta_sts_fetches_total",
    "MTA-STS policy fetches over HTTPS (a new or changed TXT id)",
    ["result"],
)
MTA_STS_ROUTES = Counter(
    "mailyard_delivery_mta_sts_routes_total",
    "Routes of domains with an MTA-STS policy, by its mode and whether their MX hosts "
    "match it (mismatch under enforce: deferred; under testing: delivered, reported)",
    ["mode", "result"],
)
DANE_LOOKUPS = Counter(
    "mailyard_delivery_dane_lookups_total",
    "TLSA lookups for MX hosts about to be tried (delivery.dane.enabled), by what DNSSEC "
    "said: secure (authenticated records: DANE applies), none (authenticated denial), "
    "insecure (not signed, or the host's addresses were not: not looked up), failed "
    "(SERVFAIL or no answer: the host is skipped, dnssec-invalid)",
    ["result"],
)
for _result in ("ok", "failed"):
    MTA_STS_FETCHES.labels(_result)
for _result in ("secure", "none", "insecure", "failed"):
    DANE_LOOKUPS.labels(_result)
for _mode in ("enforce", "testing"):
    for _result in ("match", "mismatch"):
        MTA_STS_ROUTES.labels(_mode, _result)

CLASSIFIED = Counter(
    "mailyard_delivery_classified_total",
    "Deferred and failed recipients by bounce class (mailyard/classify.py)",
    ["outcome", "class"],  # deferred | failed; one of the fixed class names
)

TLSRPT_SESSIONS = Counter(
    "mailyard_delivery_tlsrpt_sessions_total",
    "TLS negotiations counted for the TLS reports of RFC 8460 (and MTA-STS policy fetches "
    "that failed), by result; not counted: sessions of report mail, of the smarthost, in "
    "tls none",
    ["result"],  # success, failure
)
TLSRPT_DROPPED = Counter(
    "mailyard_delivery_tlsrpt_dropped_total",
    "TLS report counts that did not fit in memory: sessions of a domain past "
    "delivery.tlsrpt.max_domains (policy), failures without a row of their own past "
    "max_failure_details (failure_detail: still in the summary)",
    ["kind"],
)
TLSRPT_LOOKUPS = Counter(
    "mailyard_delivery_tlsrpt_lookups_total",
    "_smtp._tls TXT lookups for the domains of a closed interval: a TLSRPTv1 record found, "
    "none (no report is due), or the lookup failed (that report is lost)",
    ["result"],
)
TLSRPT_REPORTS = Counter(
    "mailyard_delivery_tlsrpt_reports_total",
    "TLS reports sent, by method (mailto: stored on inbound for our pipeline to deliver; "
    "https: POSTed) and result",
    ["method", "result"],
)
for _result in ("success", "failure"):
    TLSRPT_SESSIONS.labels(_result)
for _kind in ("policy", "failure_detail"):
    TLSRPT_DROPPED.labels(_kind)
for _result in ("found", "none", "failed"):
    TLSRPT_LOOKUPS.labels(_result)
for _method in ("mailto", "https"):
    for _result in ("sent", "failed"):
        TLSRPT_REPORTS.labels(_method, _result)

# Shaping (delivery/gate.py). `destination` is a shaping key (a domain or a
# site pattern) named in delivery.shaping.destinations, the shipped entries
# or metrics.destinations; every other destination is "other", which only
# the counters and the sessions gauge report.
SHAPING_SESSIONS = Gauge(
    "mailyard_delivery_shaping_sessions",
    "SMTP sessions open to a destination by this process, in use or idle",
    ["destination"],
)
SHAPING_LIMIT = Gauge(
    "mailyard_delivery_shaping_limit",
    "A destination's cluster-wide limit after backoff",
    ["destination", "limit"],  # connections | messages_per_second
)
SHAPING_SHARE = Gauge(
    "mailyard_delivery_shaping_share",
    "This process's share of a destination's limit",
    ["destination", "limit"],
)
SHAPING_MESSAGES = Counter(
    "mailyard_delivery_shaping_messages_total",
    "Jobs let through to a destination (one SMTP transaction each)",
    ["destination"],
)
SHAPING_THROTTLED = Counter(
    "mailyard_delivery_shaping_throttled_total",
    "Attempts whose replies matched a throttling rule (rules/throttling.yaml)",
    ["destination"],
)
SHAPING_PAUSED = Gauge(
    "mailyard_delivery_shaping_paused",
    "1 while a destination is paused by backoff: its jobs wait in the retry ladder",
    ["destination"],
)
SHAPING_HELD = Counter(
    "mailyard_delivery_shaping_held_total",
    "Jobs put back in the retry ladder without an attempt",
    ["destination", "reason"],  # busy | paused | no_share
)
SHAPING_MEMBERS = Gauge(
    "mailyard_delivery_shaping_members",
    "Delivery processes sharing the destinations' limits, as this one counts them",
)
SLOT_WAITING = Gauge(
    "mailyard_delivery_slot_waiting_jobs",
    "Jobs waiting for one of the delivery.concurrency job slots, by class (queue.classes)",
    ["class"],
)
SLOT_WAIT_SECONDS = Histogram(
    "mailyard_delivery_slot_wait_seconds",
    "Time a job waited for a job slot, by class: transactional stays low during a bulk flood",
    ["class"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
