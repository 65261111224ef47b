"""The embedded adapter of the broker port: one process, one SQLite spool."""

from mailyard.broker.embedded.adapter import EmbeddedBroker
from mailyard.broker.embedded.spool import Spool

__all__ = ["EmbeddedBroker", "Spool"]
