"""`make bench`: Mailyard's throughput, latency and cost, side by side with Postfix."""
