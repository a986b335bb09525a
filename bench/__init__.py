"""Benchmarks: each script prints one JSON object (see README)."""
