"""ingress — the SMTP server.

Job: accept mail over SMTP (aiosmtpd), decide at SMTP time — may this client
relay, is the size right, are the recipients sane — and reply ``250`` only
once the broker holds the message (RabbitMQ's confirm on the quorum queue
``<prefix>.inbound``, or the embedded spool's fsync). Broker trouble is a
``451 4.3.0``: never a lost message, never a 250 for something not stored.

Listeners have a role: ``mx`` (port 25: mail from the internet; STARTTLS
when ``ingress.tls`` is set, AUTH only after it), ``submission`` (587:
STARTTLS, then AUTH for every transaction) and ``submissions`` (465:
implicit TLS, then AUTH).

Security: the only service that faces the internet. Clients outside
``ingress.relay_networks`` that have not authenticated may send only to
``ingress.local_domains``; everything else is ``554 5.7.1``. An
authenticated user may send only from its ``sender_domains``. Hostile
sessions (early talkers, improper pipelining, bare LF, junk commands, slow
uploads, too many connections, AUTH guessing) are told why and cut off; one
memory budget bounds what all uploads hold. It talks to nothing but its
clients and the broker, and reads its certificate and users from files it
re-reads when they change.

Standards: RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 2034 and RFC 3463
(enhanced status codes), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING/BDAT),
RFC 3207 (STARTTLS), RFC 8314 (implicit TLS), RFC 4954 (AUTH), RFC 4616
(PLAIN), RFC 3461 (DSN parameters), RFC 6152 (8BITMIME), RFC 6531
(SMTPUTF8), RFC 6409 (submission), RFC 3848 (ESMTPSA), RFC 2142 (role
mailboxes), HAProxy's PROXY protocol v1/v2.

Metrics: ``mailyard_ingress_*`` — connections, sessions, accepted messages,
recipients and bytes, refusals by stage and reason, time to store, TLS
sessions by role and version, AUTH results, limit hits by reason, the
certificate's expiry; ``mailyard_file_reloads_total``.

Configuration: ``ingress.*`` (listen with roles, tls, auth, limits,
relay_networks, local_domains, postmaster, max_message_size,
max_recipients, max_connections, max_hops, idle_timeout, proxy_protocol,
group_commit), ``hostname``, ``broker.*``.
"""
