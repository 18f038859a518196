"""Benchmark of pynenc against Celery, Dramatiq, Huey, RQ and arq (see docs/benchmarks.md).

This package is imported both by the harness (the project's virtualenv) and by
the peers' clients and workers (each peer's own virtualenv, with only the
repository root on ``PYTHONPATH``). Keep it free of imports beyond the standard
library so that both sides can load it.
"""
