"""Citadel's events reach a real Prefect server, about the collection, with the source and the run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prefect.settings import PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES, temporary_settings

from citadel.audit import AuditLog
from citadel.registry import Registry
from citadel.settings import Settings
from citadel.store import VectorStore
from citadel.testing.corpus import write_corpus
from flows.index_corpus import index_corpus
from tasks.events import emit_source_changed
from tests.support.prefect_events import related_of, wait_for_events


async def test_a_run_sends_completed_and_failed_documents_with_its_counts(
    data_dir: Path, tmp_path: Path, collection_name: str, prefect_api_url: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, seed=4)
    (corpus / "empty.md").write_text("")
    summary = await index_corpus(str(corpus), collection=collection_name)

    resource = f"citadel.collection.{collection_name}"
    (completed,) = await wait_for_events(prefect_api_url, "citadel.index.completed", resource)
    assert completed["resource"]["citadel.collection"] == collection_name
    payload = completed["payload"]
    assert (payload["added"], payload["failed"], payload["chunks_embedded"]) == (3, 1, summary["chunks_embedded"])
    assert payload["source"] == summary["source"] == str(corpus)
    (source,) = related_of(completed, "source")
    assert source["prefect.resource.id"] == f"citadel.source.{corpus}"
    assert [r["prefect.resource.id"] for r in related_of(completed, "flow-run")] == [f"prefect.flow-run.{summary['flow_run_id']}"]

    (failed,) = await wait_for_events(prefect_api_url, "citadel.document.failed", resource)
    assert failed["payload"]["count"] == 1
    assert failed["payload"]["documents"] == [{"document_id": str(corpus / "empty.md"), "stage": "load"}]


async def test_a_failed_run_sends_index_failed(data_dir: Path, tmp_path: Path, collection_name: str, prefect_api_url: str) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(Exception, match="no-such-folder"):
        await index_corpus(str(missing), collection=collection_name)
    (failed,) = await wait_for_events(prefect_api_url, "citadel.index.failed", f"citadel.collection.{collection_name}")
    assert failed["payload"]["flow"] == "index-corpus" and failed["payload"]["state"] == "Failed"
    assert "no-such-folder" in failed["payload"]["message"]
    assert related_of(failed, "source")[0]["citadel.source"] == str(missing)
    assert related_of(failed, "flow-run"), "the failed run is named"


async def test_a_blue_green_switch_is_announced(data_dir: Path, tmp_path: Path, collection_name: str, prefect_api_url: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, seed=6)
    first = await index_corpus(str(corpus), collection=collection_name, blue_green=True)
    second = await index_corpus(str(corpus), collection=collection_name, blue_green=True)
    events = await wait_for_events(prefect_api_url, "citadel.collection.switched", f"citadel.collection.{collection_name}", count=2)
    assert [e["payload"]["live"] for e in events] == [first["switch"]["live"], second["switch"]["live"]]
    assert events[1]["payload"]["previous"] == first["switch"]["live"]
    assert all(e["payload"]["collection"] == collection_name for e in events)
    registry = Registry(Settings().registry_url)  # the audit trail names the flow run that switched
    try:
        lines = [line for line in await AuditLog(registry).read() if line.action == "collection.switched"]
        lines = [line for line in lines if collection_name in line.target]
    finally:
        await registry.aclose()
    assert len(lines) == 2 and all(line.actor.startswith("flow-run:") and line.outcome == "ok" for line in lines), lines


async def test_a_store_that_lost_its_points_is_announced_repaired(
    data_dir: Path, tmp_path: Path, collection_name: str, prefect_api_url: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4, seed=7)
    await index_corpus(str(corpus), collection=collection_name)
    store = VectorStore.connect(url=None, api_key=None, path=Settings().qdrant_path)
    await store.delete_collection(collection_name)
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert summary["repaired"] == 4
    (repaired,) = await wait_for_events(prefect_api_url, "citadel.store.repaired", f"citadel.collection.{collection_name}")
    assert repaired["payload"]["documents"] == 4 and repaired["payload"]["version"] == collection_name


async def test_an_event_that_cannot_be_sent_never_fails_the_run(
    data_dir: Path, tmp_path: Path, collection_name: str, prefect_api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Prefect refuses an event over its size limit: here the one naming twenty failed documents
    with long names. The run completes, says why in a warning, and its other events still go."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, seed=8)
    for number in range(20):
        (corpus / f"{number:02d}-{'long-name-' * 20}.md").write_text("")
    with temporary_settings(updates={PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES: 4000}), caplog.at_level(logging.WARNING, "tasks.events"):
        summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["added"], summary["failed"]) == (2, 20)
    warnings = [r.getMessage() for r in caplog.records if r.name == "tasks.events"]
    assert len(warnings) == 1 and warnings[0].startswith("could not emit the event citadel.document.failed: Event is too large")
    await wait_for_events(prefect_api_url, "citadel.index.completed", f"citadel.collection.{collection_name}")


async def test_a_source_change_names_its_collection_and_hides_credentials(prefect_api_url: str, collection_name: str) -> None:
    assert emit_source_changed("s3://user:hunter2@bucket/docs", collection_name, 3, ["a.md"])
    resource = "citadel.source.s3://user:***@bucket/docs"
    events = await wait_for_events(prefect_api_url, "citadel.source.changed", resource)
    event = events[-1]
    assert event["resource"]["citadel.collection"] == collection_name and event["payload"]["changes"] == 3
    assert related_of(event, "collection")[0]["prefect.resource.id"] == f"citadel.collection.{collection_name}"
    assert "hunter2" not in str(event)
