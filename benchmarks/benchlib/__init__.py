"""Helpers of the benchmark harness (``benchmarks/run.py``): datasets, tool runners, report."""
