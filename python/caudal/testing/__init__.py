"""Helpers for tests and benchmarks: a manual clock for executors
(:class:`ManualClock`), and real servers (started on loopback, in temporary
directories, stopped afterwards: caudal.testing.servers)."""

from caudal.testing.clock import ManualClock

__all__ = ["ManualClock"]
