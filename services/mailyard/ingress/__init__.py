"""ingress — the SMTP server.

Job: accept mail over SMTP (aiosmtpd), decide at SMTP time — may this client
relay, is the size right, are the recipients sane — and reply ``250`` only
once RabbitMQ has confirmed the message on the quorum queue
``<prefix>.inbound`` (persistent, mandatory, publisher confirm). Broker
trouble is a ``451 4.3.0``: never a lost message, never a 250 for something
not stored.

Security: the only service that faces the internet. Clients outside
``ingress.relay_networks`` may send only to ``ingress.local_domains`` (where
asynchronous bounces come back); everything else is ``554 5.7.1``. It talks
to nothing but its clients and the broker.

Standards: RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 2034 and RFC 3463
(enhanced status codes), RFC 2920 (PIPELINING), RFC 6152 (8BITMIME).

Metrics: ``mailyard_ingress_*`` — connections, sessions, accepted messages,
recipients and bytes, refusals by stage and reason, time to store.

Configuration: ``ingress.*`` (listen, relay_networks, local_domains,
max_message_size, max_recipients, max_connections, max_hops, idle_timeout),
``hostname``, ``broker.*``.
"""
