"""Harnesses for tests and benchmarks, as ``prefect.testing`` is for Prefect: a generated corpus
and the invariants to check on it, and a real ``prefect server start`` with workers.

Not used by Citadel itself; both the test suite and ``bench/`` import them from here.
"""
