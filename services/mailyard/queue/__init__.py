"""queue — the policy brain (Postfix's cleanup + qmgr).

Job: take accepted messages from ``<prefix>.inbound``, DKIM-sign each once
(every key of ``dkim.keys`` whose domain is the ``From:`` domain or a parent
of it: RSA and Ed25519 side by side, one signature per key), then split
their recipients by destination domain into delivery jobs (at most
``queue.max_recipients_per_job`` each) on ``<prefix>.delivery``; send mail
for local domains to the bounce service (``<prefix>.local``), never out.
Recipients on the suppression list (its copy of ``<prefix>.suppression``,
loaded before the first message and followed after) are held back: a
``suppressed`` event each job, which the bounce service turns into a DSN.
Owns the retry schedule: deferred jobs from delivery come back on
``<prefix>.deferred`` and go to the TTL queue ``<prefix>.retry.<delay>`` of
the next rung of ``queue.retry_delays``, which dead-letters them back to
delivery when the delay is up; past ``queue.max_lifetime`` they expire
instead (an ``expired`` event, hence a DSN). A retry that crosses
``queue.delay_warning`` emits a ``delayed`` event once per job, for the
recipients whose NOTIFY allows delays (hence a "delayed" DSN). With
``bounce.return_path_domain`` set, each remote recipient gets a job of its
own whose envelope sender is its HMAC-signed VERP address (``split.py``,
``returnpath.py``), and the original sender is recorded in
``X-Mailyard-Envelope-From``.

Security: talks only to the broker. Holds the DKIM private keys (read-only
files, re-read when they change); a message that cannot be signed is sent
on unsigned, never held.

Standards: RFC 5321 §4.5.4 (retry strategy), §4.5.3.1.8 (recipients per
transaction); RFC 3461 §4.1 (NOTIFY=DELAY), RFC 3464 §2.3.3 ("delayed");
DKIM: RFC 6376 (relaxed/relaxed, no ``l=``, From oversigned), RFC 8301
(rsa-sha256, keys of 1024 bits at least), RFC 8463 (ed25519-sha256).

Metrics: ``mailyard_queue_*`` — messages split, jobs and recipients by
destination, retries by delay, expiries, delay warnings; DKIM:
``mailyard_queue_dkim_signed_total{domain}`` (by key domain) and
``mailyard_queue_dkim_unsigned_total{reason}`` (no_key, no_from, error);
key reloads in ``mailyard_file_reloads_total{key="dkim.keys[N].key_file"}``;
``mailyard_queue_suppressed_total{source}`` (recipients held back).

Configuration: ``queue.*``, ``suppression.*``, ``dkim.keys`` (domain, selector, key_file; make a
key and its DNS record with ``mailyard dkim keygen``),
``ingress.local_domains``, ``bounce.return_path_domain`` and
``bounce.verp_secret_file`` (VERP), ``broker.*``.
"""
