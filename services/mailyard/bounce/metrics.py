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
    ["reason"],  # null_sender
)
LOCAL_MESSAGES = Counter(
    "mailyard_bounce_local_messages_total",
    "Messages received for ingress.local_domains (asynchronous bounces, replies)",
)
