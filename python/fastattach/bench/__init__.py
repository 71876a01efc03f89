"""Benchmark harness: ``python -m fastattach.bench`` (see docs/bench.md)."""
