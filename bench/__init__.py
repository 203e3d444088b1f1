"""Benchmarks: `python -m bench.run` (see run.py)."""
