"""Benchmarks: the pipeline against the same jobs by hand (docs/results)."""
