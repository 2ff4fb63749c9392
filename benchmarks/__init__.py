"""Benchmarks of the pipeline, run from the repository root after `make repro`:
`python -m benchmarks.<name> --help` (trainer_vs_ours, gpu_throughput, ...)."""
