"""monitor_svc: HealthService, Prometheus /metrics and JSON health."""
