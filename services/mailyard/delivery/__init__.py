"""delivery — the SMTP client to the internet.

Job: take a job from ``<prefix>.delivery``, find the destination's mail
hosts (MX by preference, implicit MX, null MX) with dnspython, and run one
SMTP transaction for all its recipients with opportunistic STARTTLS, reusing
sessions across jobs and holding at most
``delivery.max_connections_per_destination`` per domain. Each recipient's
reply decides its fate: 2xx ``delivered``, 4xx ``deferred`` (the job goes to
``<prefix>.deferred`` for the queue service to schedule), 5xx ``failed``
(an event that becomes a DSN). The input is acked only after all of that is
confirmed by the broker; each attempt has a hard deadline
(``delivery.attempt_timeout``).

Security: the only service that opens connections to the internet, to port
``delivery.port`` (25) of the hosts DNS names, and to DNS.

Standards: RFC 5321 (SMTP, §5.1 MX selection), RFC 7505 (null MX), RFC 3207
and RFC 7435 (opportunistic STARTTLS), RFC 3463 (status codes), RFC 8461
(MTA-STS), RFC 7672, 7671 and 6698 (DANE, with ``delivery.dane.enabled``).

Metrics: ``mailyard_delivery_*`` — jobs, recipients by outcome and reply
class, attempt duration, accept-to-delivery latency, DNS and host failures,
sessions opened/reused by TLS, TLS sessions by policy and result, MTA-STS
fetches, DANE's TLSA lookups, possible duplicates.

Configuration: ``delivery.*``, ``hostname`` (our EHLO name), ``broker.*``.
"""
