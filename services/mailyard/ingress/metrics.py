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

TLS_SESSIONS = Counter(
    "mailyard_ingress_tls_sessions_total",
    "TLS handshakes completed (STARTTLS or implicit), by listener role and TLS version",
    ["role", "version"],  # mx|submission|submissions, TLSv1.2|TLSv1.3
)
TLS_FAILURES = Counter(
    "mailyard_ingress_tls_failures_total",
    "TLS handshakes that failed or timed out, by listener role",
    ["role"],
)
AUTH = Counter(
    "mailyard_ingress_auth_total",
    "AUTH attempts by mechanism and result (success, failure, locked_out)",
    ["mechanism", "result"],
)
LIMIT_HITS = Counter(
    "mailyard_ingress_limit_hits_total",
    "Sessions or commands stopped by an ingress.limits rule or a protocol check, by reason",
    ["reason"],
)
CERTIFICATE_EXPIRY = Gauge(
    "mailyard_ingress_certificate_expiry_timestamp_seconds",
    "When the certificate ingress presents expires (Unix time)",
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
for _mechanism in ("PLAIN", "LOGIN"):
    for _result in ("success", "failure", "locked_out"):
        AUTH.labels(_mechanism, _result)
LIMIT_REASONS = (
    "connections_per_client",
    "connection_rate",
    "junk_commands",
    "min_data_rate",
    "idle_timeout",
    "tls_handshake_timeout",
    "data_memory",
    "auth_failures",
    "early_talker",
    "pipelining_before_ehlo",
    "data_before_354",
    "bare_newline",
    "line_too_long",
    "header_too_big",
    "message_too_big",
    "nul",
    "bad_bdat",
)
for _reason in LIMIT_REASONS:
    LIMIT_HITS.labels(_reason)
