"""The case model and the maths: cases, ops, statistics, the clock loop, errors.

Pure data and computation. Imports nothing else of bench_suite (see docs/architecture.md).
"""
