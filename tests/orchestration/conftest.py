"""Orchestration tests run against the session's real Prefect server."""

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    yield
