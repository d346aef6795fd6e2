"""Helpers for tests and benchmarks that need real servers (started on
loopback, in temporary directories, stopped afterwards)."""
