"""What a run shows in Prefect: its name, tags, task names, artifacts, and a result its caller can read."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from citadel.models import RunSummary, SearchResults
from citadel.testing.corpus import append_paragraph, write_corpus
from flows.embed_texts import embed_texts
from flows.index_corpus import index_corpus
from flows.run_workflow import run_workflow
from flows.similarity_search import similarity_search
from tasks.reporting import artifact_key


async def _run_of(state, tasks: int = 0):
    """The flow run of a finished state, read back from the server, with its task runs once it
    knows all ``tasks`` of them, each in a final state, and its artifacts.

    Task runs reach the server as events, after the run and in no set order: reading as soon as
    it knew some of them (fewer than the run made) let a loaded machine show a test some steps of
    a run and not others."""
    deadline = time.monotonic() + 120
    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
        while True:
            found = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            if len(found) >= tasks and all(task.state is not None and task.state.is_final() for task in found):
                break
            assert time.monotonic() < deadline, f"the server knows {len(found)} of the run's {tasks} task runs: {found}"
            await asyncio.sleep(0.2)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    # A table artifact's data is JSON text (what a REST client reads too); markdown is the text.
    shown = {a.key: json.loads(a.data) if a.type == "table" else a.data for a in artifacts if a.key}
    return run, found, shown


async def test_an_index_run_is_named_tagged_and_reports_its_summary_and_dead_letters(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    (corpus / "empty.md").write_text("")
    state = await index_corpus(str(corpus), collection=collection_name, return_state=True)
    # prepare, check, plan, embed, upsert, record, prune, and the resolution of the dead letters (empty.md's)
    run, tasks, artifacts = await _run_of(state, tasks=8)

    assert run.name == f"index-{collection_name}"
    # The run says what happened and stays a success (for retries, schedules and its callers).
    assert run.state is not None and run.state.is_completed() and run.state.name == "Completed with 1 failed document"
    assert {f"collection:{collection_name}", "embedder:wordllama"} <= set(run.tags)
    names = {task.name for task in tasks}
    assert {f"prepare {collection_name}", f"check the store of {collection_name}", "plan 4 files (batch 1)"} <= names
    assert any(name.startswith("embed ") and name.endswith("chunks of 3 documents (batch 1)") for name in names)

    summary = RunSummary.model_validate(await state.aresult())  # the persisted JSON result
    (row,) = artifacts[artifact_key("index", collection_name)]
    assert (row["added"], row["failed"], row["chunks_embedded"]) == (summary.added, summary.failed, summary.chunks_embedded)
    assert (summary.added, summary.failed) == (3, 1) and row["duration_s"] == summary.duration_s
    dead = artifacts[artifact_key("dead-letters", collection_name)]
    assert "empty.md" in dead and "empty document" in dead


async def test_edits_of_several_batches_show_as_one_write_named_after_its_batches(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=9)
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "3")
    await index_corpus(str(corpus), collection=collection_name)
    append_paragraph([paths[1], paths[7]])  # batches 1 and 3
    state = await index_corpus(str(corpus), collection=collection_name, return_state=True)
    # prepare, check, two plan steps (the first batch, then the rest), one embed, upsert and record, the prune
    run, tasks, _ = await _run_of(state, tasks=8)
    assert run.state is not None and run.state.name == "Completed"  # nothing failed: the plain name
    names = {task.name for task in tasks}
    writes = sorted(name for name in names if name.split()[0] in ("embed", "upsert", "record"))
    assert len(writes) == 3 and all(name.endswith("(batches 1-3)") for name in writes), writes
    assert "record 2 documents (batches 1-3)" in writes
    assert sorted(name for name in names if name.startswith("plan ")) == ["plan 3 files (batch 1)", "plan 6 files (batches 2-3)"]


async def test_plan_steps_read_one_full_batch_or_up_to_four_sparse_ones_and_screen_ids_across_them(
    data_dir: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first index plans a batch per step (each fills a write: no more in memory than that); a
    sparse edit reads up to four batches a step, fewer task runs, and a repeated id is refused in
    another batch of the same step as in a later step."""
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "2")
    records = [{"id": str(n), "text": f"record number {n}"} for n in range(10)]
    state = await index_corpus(records, collection=collection_name, source_name="crm", return_state=True)
    _, tasks, _ = await _run_of(state, tasks=22)  # prepare, check, and five plans, embeds, upserts, records
    assert sorted(task.name for task in tasks if task.name.startswith("plan ")) == [
        f"plan 2 records (batch {n})" for n in range(1, 6)
    ]

    records[5] = {"id": "2", "text": "another record two, in batch 3 (record 2 is in batch 2)"}
    records[9] = {"id": "0", "text": "another record zero, in batch 5 (record 0 is in batch 1)"}
    state = await index_corpus(records, collection=collection_name, source_name="crm", return_state=True)
    summary = RunSummary.model_validate(await state.aresult())
    assert (summary.unchanged, summary.added, summary.failed) == (8, 0, 2)
    _, tasks, _ = await _run_of(state, tasks=6)  # prepare, check, two plans, upsert, record
    assert sorted(task.name for task in tasks if task.name.startswith("plan ")) == [
        "plan 2 records (batch 1)", "plan 8 records (batches 2-5)"
    ]


async def test_a_search_result_reaches_its_caller_and_its_hits_show(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    (corpus / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    await index_corpus(str(corpus), collection=collection_name)
    state = await similarity_search("zebras juggling", collection=collection_name, limit=2, return_state=True)
    found = SearchResults.model_validate(await state.aresult())
    hits = found.hits
    assert found.mode == "hybrid"
    assert hits[0].document_id == str(corpus / "zebra.md")
    run, _, artifacts = await _run_of(state)
    assert run.name == f"search-{collection_name}"
    top = artifacts[artifact_key("search", collection_name)]
    assert top[0]["document"] == str(corpus / "zebra.md") and top[0]["rank"] == 1


async def test_embed_and_workflow_runs_are_named_and_report(data_dir: Path) -> None:
    state = await embed_texts(["one text", "another text"], return_state=True)
    run, _, artifacts = await _run_of(state)
    assert run.name == "embed-2-texts" and len((await state.aresult())["vectors"]) == 2
    (row,) = artifacts[artifact_key("embed", "wordllama-l2_supercat-256d")]
    assert row["texts"] == 2

    workflow_id = f"wf-{uuid.uuid4().hex[:6]}"
    workflow = {"workflow_id": workflow_id, "steps": [
        {"step_id": "split", "type": "chunk", "parameters": {"text": "one. two. three.", "chunk_size": 6, "chunk_overlap": 0}},
        {"step_id": "vectors", "type": "embedding", "parameters": {"texts": "${steps.split.output.texts}"}},
    ]}
    state = await run_workflow(workflow, return_state=True)
    run, tasks, artifacts = await _run_of(state)
    assert run.name == f"workflow-{workflow_id}" and f"workflow:{workflow_id}" in run.tags
    split, vectors = artifacts[artifact_key("workflow", workflow_id)]
    assert (split["step"], split["state"], split["output or error"]) == ("split", "Completed", "3 chunks")
    # The shape of what the embed step made, never its numbers.
    assert vectors["output or error"] == "3 vectors of 256 dimensions (wordllama-l2_supercat-256d), 0 from the cache"


async def test_the_task_graph_shows_the_data_flow_plan_embed_upsert_record(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write step's inputs name the step that made what it writes, as Prefect's graph draws
    them: plan -> embed -> upsert -> record, batch by batch, and no edge from an unrelated step."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=6, paragraphs=30)
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "2")
    state = await index_corpus(str(corpus), collection=collection_name, return_state=True)
    _, tasks, _ = await _run_of(state, tasks=15)  # prepare, check, and per batch of 2 files a plan, embed, upsert, record, the prune
    by_id = {str(task.id): task for task in tasks}

    def upstream(task) -> set[str]:
        return {by_id[str(ref.id)].name.split()[0] for refs in task.task_inputs.values() for ref in refs if str(ref.id) in by_id}

    kinds = {"embed": {"plan"}, "upsert": {"embed"}, "record": {"upsert"}}
    steps = [task for task in tasks if task.name.split()[0] in kinds]
    assert len(steps) == 9, sorted(task.name for task in tasks)
    for task in steps:
        assert upstream(task) == kinds[task.name.split()[0]], (task.name, task.task_inputs)
    # Each batch's chain names one batch: an upsert's embed and a record's upsert carry its label.
    for task in steps:
        label = task.name[task.name.rindex("("):]
        for refs in task.task_inputs.values():
            for ref in refs:
                parent = by_id[str(ref.id)]
                assert parent.name.startswith("plan") or parent.name.endswith(label), (task.name, parent.name)
