"""Benchmarks: JSON out, compile time apart from run time, baselines in the same process."""
