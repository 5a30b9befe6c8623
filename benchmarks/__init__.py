"""Reproducible benchmarks, each runnable as ``python -m benchmarks.NAME`` and printing JSON."""
