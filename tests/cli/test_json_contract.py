"""``--json`` is a contract for scripts: the typed results only add keys, never rename or drop one.

The keys each command printed before the results were typed are listed here as they were; each
must still be there, and the output must be exactly the model's fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citadel.models import (
    CollectionStatus,
    DeadLetterRecord,
    DoctorCheck,
    IndexRunRecord,
    RunSummary,
    SearchHit,
    StatusReport,
    StepReport,
    WorkflowReport,
)
from citadel.testing.corpus import write_corpus
from cli.main import app

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

INDEX_KEYS = {
    "added", "updated", "unchanged", "deleted", "failed", "chunks_embedded", "chunks_written", "chunks_reused",
    "cache_hits", "documents_seen", "duration_s", "collection", "model", "source", "vector_store_opened", "run_id",
    "flow_run_id",
}
HIT_KEYS = {"score", "id", "document_id", "chunk_index", "text", "source", "payload"}
STATUS_KEYS = {"collections", "runs", "dead_letters"}
COLLECTION_KEYS = {"collection", "model", "dimensions", "documents", "chunks", "dead_letters", "vectors"}
RUN_KEYS = {
    "id", "collection", "source", "flow_run_id", "status", "started_at", "finished_at", "duration_s", "added", "updated",
    "unchanged", "deleted", "failed", "chunks_embedded", "cache_hits",
}
DEAD_LETTER_KEYS = {"collection", "document_id", "source", "stage", "error", "attempts", "first_failed_at", "last_failed_at"}
DOCTOR_KEYS = {"name", "ok", "detail", "fix"}
WORKFLOW_KEYS = {"flow_run_id", "name", "workflow_id", "state", "start", "end", "steps"}
STEP_KEYS = {"state", "start", "end", "error", "output"}

runner = CliRunner()


def json_of(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    return json.loads(result.stdout)


def keys(data: object, model: type) -> set[str]:
    assert isinstance(data, dict)
    shown = set(data)
    assert shown == set(model.model_fields) | set(model.model_computed_fields), f"{model.__name__} is what is printed"
    return shown


def test_every_json_output_keeps_its_keys(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    (corpus / "empty.md").write_text("")
    assert INDEX_KEYS <= keys(json_of("index", str(corpus), "--collection", collection_name), RunSummary)

    hits = json_of("search", "vector cache", "--collection", collection_name)
    assert isinstance(hits, list) and hits and HIT_KEYS <= keys(hits[0], SearchHit)

    status = json_of("status")
    assert STATUS_KEYS <= keys(status, StatusReport)
    assert isinstance(status, dict)
    assert COLLECTION_KEYS <= keys(status["collections"][0], CollectionStatus)
    assert RUN_KEYS <= keys(status["runs"][0], IndexRunRecord)
    assert DEAD_LETTER_KEYS <= keys(status["dead_letters"][0], DeadLetterRecord)

    checks = json_of("doctor")
    assert isinstance(checks, list) and all(DOCTOR_KEYS <= keys(check, DoctorCheck) for check in checks)

    workflow = tmp_path / "chunk.yaml"
    workflow.write_text("workflow_id: w\nsteps:\n  - step_id: c\n    type: chunk\n    parameters: {text: some words to split}\n")
    report = json_of("workflow", "run", str(workflow), "--local", "--wait")
    assert WORKFLOW_KEYS <= keys(report, WorkflowReport)
    assert isinstance(report, dict) and STEP_KEYS <= keys(report["steps"]["c"], StepReport)
