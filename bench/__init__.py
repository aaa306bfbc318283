"""Benchmarks: `./dev.sh bench` (or `python -m bench`) prints measured numbers, asserts nothing."""
