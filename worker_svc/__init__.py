"""worker_svc: pulls runs from Redis and executes their scripts in isolation."""
