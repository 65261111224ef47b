"""Bounce service metrics."""

from prometheus_client import Counter, Gauge, Histogram

DSNS = Counter(
    "mailyard_bounce_dsns_total",
    "Delivery status notifications queued, by action",
    ["kind"],  # failed | delayed | relayed (RFC 3464 §2.3.3)
)
DSN_RECIPIENTS = Counter(
    "mailyard_bounce_dsn_recipients_total",
    "Recipients reported in DSNs, by what happened to them and bounce class",
    # failed | expired | suppressed | delayed | relayed; mailyard/classify.py's names
    ["kind", "class"],
)
DSN_EVENTS = Histogram(
    "mailyard_bounce_dsn_events",
    "Events that one DSN reports (those of one message that came within bounce.dsn_window)",
    buckets=(1, 2, 3, 5, 10, 20, 50),
)
WINDOW_EVENTS = Gauge(
    "mailyard_bounce_dsn_window_events",
    "Events waiting (unacknowledged) in the DSN window for the other notices of their message",
)
DSNS_SKIPPED = Counter(
    "mailyard_bounce_dsns_skipped_total",
    "Events that got no DSN, by reason",
    ["reason"],  # null_sender | not_requested (NOTIFY=NEVER, or not for this kind)
)
LOCAL_MESSAGES = Counter(
    "mailyard_bounce_local_messages_total",
    "Messages received for ingress.local_domains (asynchronous bounces, replies)",
)
SUPPRESSIONS_ADDED = Counter(
    "mailyard_bounce_suppressions_added_total",
    "Entries the bounce service added to the suppression list, by source and bounce class",
    ["source", "class"],  # bounce | complaint; mailyard/classify.py's names ("" if none)
)
SUPPRESSION_STRIKES = Counter(
    "mailyard_bounce_suppression_strikes_total",
    "Expired recipients counted towards suppression.expired_strikes",
)
ASYNC = Counter(
    "mailyard_bounce_async_total",
    "Mail for local domains judged as an asynchronous report, per envelope recipient, by result",
    # bounced | complained | delayed | forged | unsigned | unparsable | not_a_bounce
    # (bounce/inbound.py's Result)
    ["result"],
)
COMPLAINTS = Counter(
    "mailyard_bounce_complaints_total",
    "ARF complaints (RFC 5965) turned into complained events, by feedback type",
    ["feedback_type"],  # abuse | auth-failure | fraud | not-spam | other | virus
)
