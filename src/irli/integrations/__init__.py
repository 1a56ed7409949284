"""Adapters for other projects' harnesses (ann-benchmarks)."""
