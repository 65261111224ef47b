"""Which Mailyard runs where: a constant 1 labelled with version and services."""

from prometheus_client import Gauge

BUILD_INFO = Gauge(
    "mailyard_build_info",
    "Mailyard version and the services this process runs",
    ["version", "services"],
)
