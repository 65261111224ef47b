"""Ingress metrics. Labels are bounded: reasons and reply classes, never addresses."""

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Counter("mailyard_ingress_connections_total", "SMTP connections accepted")
ACTIVE_SESSIONS = Gauge("mailyard_ingress_sessions", "SMTP sessions open now")
ACCEPTED = Counter(
    "mailyard_ingress_accepted_total", "Messages accepted (250 after DATA, broker confirmed)"
)
ACCEPTED_RECIPIENTS = Counter(
    "mailyard_ingress_accepted_recipients_total", "Recipients of accepted messages"
)
ACCEPTED_BYTES = Counter("mailyard_ingress_accepted_bytes_total", "Bytes of accepted messages")
REJECTED = Counter(
    "mailyard_ingress_rejected_total",
    "Commands refused, by stage and reason",
    ["stage", "reason"],
)
STORE_SECONDS = Histogram(
    "mailyard_ingress_store_seconds",
    "From end of DATA to the broker's confirm",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
BATCH_MESSAGES = Histogram(
    "mailyard_ingress_batch_messages",
    "Messages stored per publish (group commit); grows with the load",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
MESSAGE_BYTES = Histogram(
    "mailyard_ingress_message_bytes",
    "Size of accepted messages",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)

# Series that alerts and dashboards read exist from the start (at 0), so the
# first refusal is an increase, not the birth of a series.
for _stage, _reason in (
    ("mail", "broker_unavailable"),
    ("data", "broker_unavailable"),
    ("rcpt", "relay_denied"),
    ("session", "internal_error"),
):
    REJECTED.labels(_stage, _reason)
