"""queue — the policy brain (Postfix's cleanup + qmgr).

Job: take accepted messages from ``<prefix>.inbound``, split their
recipients by destination domain into delivery jobs (at most
``queue.max_recipients_per_job`` each) on ``<prefix>.delivery``; send mail
for local domains to the bounce service (``<prefix>.local``), never out.
Owns the retry schedule: deferred jobs from delivery come back on
``<prefix>.deferred`` and go to the TTL queue ``<prefix>.retry.<delay>`` of
the next rung of ``queue.retry_delays``, which dead-letters them back to
delivery when the delay is up; past ``queue.max_lifetime`` they expire
instead (an ``expired`` event, hence a DSN).

Security: talks only to the broker.

Standards: RFC 5321 §4.5.4 (retry strategy), §4.5.3.1.8 (recipients per
transaction).

Metrics: ``mailyard_queue_*`` — messages split, jobs and recipients by
destination, retries by delay, expiries.

Configuration: ``queue.*``, ``ingress.local_domains``, ``broker.*``.
"""
