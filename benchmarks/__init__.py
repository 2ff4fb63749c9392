"""Benchmarks: our train loop against `transformers.Trainer` (CPU) and GPU throughput.

Run from the repository root, e.g. `python -m benchmarks.trainer_vs_ours --help`.
"""
