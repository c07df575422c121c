"""Benchmarks of the suite's own speed: ``python -m perf fisher|pbu-step|throughput``."""
