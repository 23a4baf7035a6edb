"""Load tests for the served graph: peak traffic with autoscaling, faults and overload, and the throughput benchmark.

Run from the repository root: `python -m load_tests.peak`, `python -m load_tests.faults`,
`python -m load_tests.benchmark` (each with `--help`).
"""
