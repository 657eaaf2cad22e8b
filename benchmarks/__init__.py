"""Benchmarks of the native lab, each figure measured beside a reference in the same run.

Run them with `make bench` or `python -m benchmarks --help`; they write docs/benchmarks.md.
"""
