"""Benchmarks: functions that measure cellframe on this machine and return dicts of figures."""
