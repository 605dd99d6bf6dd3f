"""Citadel's deployments: what runs on a Prefect server, on what schedule, with what limits.

``prefect.yaml`` declares them for ``prefect deploy --all`` (workers in a work pool);
:mod:`deployments.catalog` declares the same ones in Python for ``citadel serve`` (one process,
no work pool). A test keeps the two in step.
"""
