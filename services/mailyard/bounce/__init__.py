"""bounce — delivery status notifications, and mail that comes back to us.

Job: for every ``failed``, ``expired`` or ``suppressed`` event (queue
``<prefix>.bounce``), write an RFC 3464 DSN to the envelope sender and queue
it through the pipeline with the null sender; never one to the null sender,
nor for a suppressed recipient whose client asked NOTIFY=NEVER. Owns the
suppression list's automatic entries: hard bounces of the classes that mean
the address is gone, expiry strikes, complaints (``suppress.py``), appended
to ``<prefix>.suppression`` before the event is released, and the list's
periodic snapshot. Mail for ``ingress.local_domains`` (asynchronous
bounces, replies) arrives on ``<prefix>.local``; it is counted and logged,
never relayed.

Security: talks only to the broker; its DSNs leave through delivery.

Standards: RFC 3464 (delivery status notifications), RFC 3461 (NOTIFY), RFC 3462
(multipart/report), RFC 3463 (status codes), RFC 3834 (Auto-Submitted).

Metrics: ``mailyard_bounce_*`` — DSNs by cause, recipients reported, DSNs
skipped and why, local messages, suppressions added by source and class,
expiry strikes.

Configuration: ``bounce.*``, ``suppression.*``, ``hostname`` (Reporting-MTA),
``broker.*``.
"""
