"""``POST /api/v1/orchestration/workflow`` answers with the run's final name, on both of its paths:
a run sent to the workers (read back from the server while no worker has started it) and a run
of the API's own process on the embedded store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from tests.api.conftest import Api, start_api
from tests.orchestration.held import held_deployment, runs_of

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

WORKFLOW = {"workflow_id": "named-over-http", "steps": [{"step_id": "c", "type": "chunk", "parameters": {"text": "a few words"}}]}


@pytest.fixture(scope="module")
def held() -> str:
    return asyncio.run(held_deployment("run-workflow"))


@pytest.fixture(scope="module")
def workers_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str, held: str) -> Iterator[Api]:
    """An API on a Qdrant server (so runs go to the workers) that sends workflows to a held deployment."""
    root = tmp_path_factory.mktemp("api-workers")
    qdrant, qdrant_url = start_qdrant_process(root / "qdrant")
    try:
        api = start_api("workers", root, prefect_api_url, CITADEL_QDRANT_URL=qdrant_url, CITADEL_API_WORKFLOW_DEPLOYMENT=held)
        yield api
        api.process.stop()
    finally:
        stop_qdrant_process(qdrant)


@pytest.fixture(scope="module")
def here_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    api = start_api("embedded", tmp_path_factory.mktemp("api-here"), prefect_api_url)
    yield api
    api.process.stop()


def test_a_run_sent_to_the_workers_is_answered_and_created_with_its_name(workers_api: Api, held: str) -> None:
    with workers_api.client(headers=workers_api.headers("workflows")) as client:
        answer = client.post("/api/v1/orchestration/workflow", json=WORKFLOW).json()
    assert answer["runs_in"] == "workers" and answer["name"] == "workflow-named-over-http", answer

    [run] = asyncio.run(runs_of(held))
    assert str(run.id) == answer["task_id"] and run.name == answer["name"]
    assert run.state is not None and run.state.name == "Scheduled", "no worker has started it"


def test_a_run_of_the_api_s_own_process_is_answered_with_its_name(here_api: Api) -> None:
    with here_api.client(headers=here_api.headers("workflows")) as client:
        answer = client.post("/api/v1/orchestration/workflow", json=WORKFLOW).json()
        status = client.get(answer["status_url"]).json()
    assert answer["runs_in"] == "api" and answer["name"] == "workflow-named-over-http", answer
    assert status["name"] == answer["name"]
