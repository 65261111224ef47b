"""Queue service metrics."""

from prometheus_client import Counter, Histogram

MESSAGES = Counter("mailyard_queue_messages_total", "Accepted messages split into jobs")
JOBS = Counter(
    "mailyard_queue_jobs_total",
    "Delivery jobs created, by destination kind",
    ["destination"],  # remote | local
)
RECIPIENTS = Counter("mailyard_queue_recipients_total", "Recipients routed", ["destination"])
DUPLICATE_RECIPIENTS = Counter(
    "mailyard_queue_duplicate_recipients_total", "Repeated envelope recipients dropped"
)
RETRIES = Counter(
    "mailyard_queue_retries_total",
    "Deferred jobs put on the retry ladder, by delay",
    ["delay"],  # bounded by queue.retry_delays
)
EXPIRED = Counter(
    "mailyard_queue_expired_total", "Jobs given up because the message lifetime passed"
)
EXPIRED_RECIPIENTS = Counter(
    "mailyard_queue_expired_recipients_total", "Recipients given up at expiry"
)
DELAY_WARNINGS = Counter(
    "mailyard_queue_delay_warnings_total",
    "Recipients whose sender is warned that delivery is delayed (queue.delay_warning)",
)
BATCH_JOBS = Histogram(
    "mailyard_queue_delivery_batch_jobs",
    "Jobs per publish to the delivery queue (one destination each)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DKIM_SIGNED = Counter(
    "mailyard_queue_dkim_signed_total",
    "Messages signed with DKIM, by signing domain (d=); one per message and domain, "
    "however many of its keys signed",
    ["domain"],  # a dkim.keys domain: bounded by configuration
)
DKIM_UNSIGNED = Counter(
    "mailyard_queue_dkim_unsigned_total",
    "Messages sent on without a DKIM signature although dkim.keys is set, by reason",
    ["reason"],  # no_key | no_from | error
)
SUPPRESSED = Counter(
    "mailyard_queue_suppressed_total",
    "Recipients not sent to because the suppression list holds them, by the entry's source",
    ["source"],  # bounce | complaint | unsubscribe | manual
)
CLASSIFIED = Counter(
    "mailyard_queue_classified_total",
    "Accepted messages by class (queue.classes) and what decided it",
    ["class", "source"],  # source: user | sender | header | default | generated
)
CLASS_IGNORED = Counter(
    "mailyard_queue_class_ignored_total",
    "Class names given for a message but not in queue.classes (ignored), by where they came from",
    ["source"],  # header (X-Mailyard-Class:) | user (an ingress with another queue.classes)
)
