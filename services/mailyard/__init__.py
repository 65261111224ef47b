"""Mailyard: a mail transfer agent in four services that talk over RabbitMQ.

    ingress ─► [inbound] ─► queue ─► [delivery] ─► delivery ─► remote MX
                                ▲                     │
                                └── [retry.<delay>] ◄─┤ 4xx (via [deferred])
                 bounce ◄── [events: failed/expired] ◄┘

The services share only the plumbing in this package (configuration, broker,
wire format, metrics endpoint); none imports another.
"""

__version__ = "0.1.0"
