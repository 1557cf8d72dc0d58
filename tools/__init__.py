"""Repository helpers for tests, demos and benchmarks (not part of the installed package)."""
