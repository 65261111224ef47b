"""Sources of Mailyard's operational artifacts (Grafana dashboards)."""
