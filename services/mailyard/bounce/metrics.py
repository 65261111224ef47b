"""Bounce service metrics."""

from prometheus_client import Counter

DSNS = Counter(
    "mailyard_bounce_dsns_total", "Delivery status notifications queued, by cause", ["kind"]
)
DSN_RECIPIENTS = Counter(
    "mailyard_bounce_dsn_recipients_total",
    "Failed recipients reported in DSNs, by bounce class",
    ["kind", "class"],  # failed | expired; mailyard/classify.py's names ("" if none)
)
DSNS_SKIPPED = Counter(
    "mailyard_bounce_dsns_skipped_total",
    "Failures that got no DSN, by reason",
    ["reason"],  # null_sender | notify (a suppressed recipient's client asked for none)
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
