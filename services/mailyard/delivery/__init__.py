"""delivery — the SMTP client to the internet.

Job: take a job from ``<prefix>.delivery``, find the destination's mail
hosts (MX by preference, implicit MX, null MX) with dnspython, and run one
SMTP transaction for all its recipients with opportunistic STARTTLS, reusing
sessions across jobs, within each destination's limits
(``delivery.shaping``: connections and messages per second, held by all the
delivery processes together, halved when the destination says it is
overwhelmed; ``gate.py``). Each recipient's
reply decides its fate: 2xx ``delivered``, 4xx ``deferred`` (the job goes to
``<prefix>.deferred`` for the queue service to schedule), 5xx ``failed``
(an event that becomes a DSN). The input is acked only after all of that is
confirmed by the broker; each attempt has a hard deadline
(``delivery.attempt_timeout``).

With ``delivery.tlsrpt`` it also counts its TLS sessions per destination
domain and sends the domains that ask for them TLS reports (RFC 8460): by
HTTPS POST, or as mail stored on ``<prefix>.inbound`` for the pipeline to
sign and deliver (``tlsrpt_send.py``).

Security: the only service that opens connections to the internet, to port
``delivery.port`` (25) of the hosts DNS names, to DNS, and over HTTPS (443)
to the MTA-STS policy hosts and the TLS report endpoints that domains
publish (never to ``delivery.prohibited_networks``).

Standards: RFC 5321 (SMTP, §5.1 MX selection), RFC 7505 (null MX), RFC 3207
and RFC 7435 (opportunistic STARTTLS), RFC 3463 (status codes), RFC 8461
(MTA-STS), RFC 7672, 7671 and 6698 (DANE, with ``delivery.dane.enabled``),
RFC 8460 (TLS reporting), RFC 3461 §5.2 (DSN requests passed on to a next
hop that offers DSN; a NOTIFY=SUCCESS to one that does not becomes a
``relayed`` event, for bounce to answer).

Metrics: ``mailyard_delivery_*`` — jobs, recipients by outcome and reply
class, attempt duration, accept-to-delivery latency, DNS and host failures,
sessions opened (by TLS and egress address) and reused, possible duplicates, TLS sessions by policy
and result, MTA-STS fetches and routes, DANE's TLSA lookups, TLS reports
(``tlsrpt_*``), recipients by bounce class.

Configuration: ``delivery.*``, ``hostname`` (our EHLO name, unless
``delivery.source_addresses`` binds connections to egress addresses with
names of their own: ``egress.py``), ``broker.*``.
"""
