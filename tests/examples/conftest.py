"""Flow tests run against one real Prefect test server for the whole session."""

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    yield
