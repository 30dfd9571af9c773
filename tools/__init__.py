"""Harnesses shared by the tests and benchmarks (not part of the product): run from the repository root."""
