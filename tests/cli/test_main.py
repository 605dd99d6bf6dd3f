"""The citadel command: output shapes, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citadel.testing.corpus import write_corpus
from cli.main import app

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_index_search_status_json(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4)
    (corpus / "notes.txt").write_text("Zebras juggle xylophones near quartz fountains.\n")
    result = invoke("index", str(corpus), "--collection", collection_name, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("added", "updated", "unchanged", "deleted", "failed", "chunks_embedded", "cache_hits", "duration_s", "collection", "model"):
        assert key in summary
    assert summary["added"] == 5 and summary["collection"] == collection_name

    result = invoke("search", "zebras juggle xylophones", "--collection", collection_name, "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert {"score", "document_id", "chunk_index", "text"} <= set(hits[0])
    assert hits[0]["document_id"].endswith("notes.txt") and hits[0]["score"] >= hits[1]["score"]

    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    entry = next(c for c in report["collections"] if c["collection"] == collection_name)
    assert entry["documents"] == 5 and entry["chunks"] == entry["vectors"] > 0
    assert report["runs"][0]["collection"] == collection_name


def test_human_output_and_failed_documents_exit_1(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    (corpus / "empty.md").write_text("")
    result = invoke("index", str(corpus), "--collection", collection_name)
    assert result.exit_code == 1
    assert "2 added" in result.stdout and "1 failed" in result.stdout
    result = invoke("status")
    assert result.exit_code == 0
    assert "dead letters" in result.stdout and "empty" in result.stdout and "test_" in result.stdout
    result = invoke("search", "vector cache", "--collection", collection_name)
    assert result.exit_code == 0 and "1." in result.stdout and "hybrid search, documents by best match" in result.stdout
    result = invoke("search", "vector cache", "--collection", collection_name, "--mode", "dense", "--chunks")
    assert result.exit_code == 0 and "dense search, chunks by best match" in result.stdout
    result = invoke("search", "vector cache", "--collection", collection_name, "--mode", "fuzzy")
    assert result.exit_code == 2 and "fuzzy" in result.output


def test_doctor_reports_unreachable_backends(data_dir: Path, monkeypatch) -> None:
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    assert all(check["ok"] for check in json.loads(result.stdout))
    monkeypatch.setenv("CITADEL_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CITADEL_EMBEDDER", "ollama")
    monkeypatch.setenv("CITADEL_OLLAMA_URLS", "http://127.0.0.1:1")
    monkeypatch.setenv("CITADEL_EMBED_RETRIES", "0")
    result = invoke("doctor")
    assert result.exit_code == 1
    assert "FAIL  embedder" in result.stdout and "ollama pull" in result.stdout
    assert "FAIL  embedding cache" in result.stdout


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO, timeout=120
    )


def test_an_unchanged_source_is_answered_without_importing_prefect(
    data_dir: Path, tmp_path: Path, prefect_api_url: str, collection_name: str
) -> None:
    """What a user waits for on a corpus with nothing to do: no Prefect, no vector-store client."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    probe = tmp_path / "probe"
    probe.mkdir()
    seen = tmp_path / "modules"
    (probe / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        "atexit.register(lambda: open(os.environ['MODULES_SEEN'], 'w').write("
        "' '.join(m for m in ('prefect', 'qdrant_client') if m in sys.modules)))\n"
    )
    env = {"PREFECT_API_URL": prefect_api_url, "PYTHONPATH": f"{probe}{os.pathsep}{REPO}", "MODULES_SEEN": str(seen)}
    index = ("index", str(corpus), "--collection", collection_name)

    first = run_cli(*index, "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["flow_run_id"] and seen.read_text() == "prefect qdrant_client"

    again = run_cli(*index, "--json", env=env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["flow_run_id"], summary["unchanged"], summary["documents_seen"]) == (None, 3, 3)
    assert seen.read_text() == "", "neither Prefect nor qdrant-client was imported"
    said = run_cli(*index, env=env)
    assert said.returncode == 0 and "3 unchanged" in said.stdout and "nothing to do: no Prefect flow run" in said.stdout

    forced = run_cli(*index, "--always-flow", "--json", env=env)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["flow_run_id"] and json.loads(forced.stdout)["unchanged"] == 3
    (corpus / "new.md").write_text("A new note about tides.\n")
    edited = run_cli(*index, "--json", env=env)
    assert json.loads(edited.stdout)["added"] == 1 and json.loads(edited.stdout)["flow_run_id"], "work runs as a flow"


def test_bad_usage_exits_2_with_one_line_and_no_traceback(data_dir: Path) -> None:
    missing = run_cli("index", "/no/such/place", env={})
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr + missing.stdout

    unknown = run_cli("index", str(REPO / "docs"), env={"CITADEL_EMBEDDER": "ollama", "CITADEL_EMBEDDING_MODEL": "no-such-model"})
    assert unknown.returncode == 2
    assert "Unsupported model 'no-such-model'" in unknown.stderr and "nomic-embed-text" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    bad_setting = run_cli("status", env={"CITADEL_CHUNK_SIZE": "lots"})
    assert bad_setting.returncode == 2 and "CITADEL_CHUNK_SIZE" in bad_setting.stderr
    assert "Traceback" not in bad_setting.stderr

    no_collection = run_cli("search", "anything", "--collection", "never_indexed", env={})
    assert no_collection.returncode == 2 and "does not exist" in no_collection.stderr
    assert "Traceback" not in no_collection.stderr


def test_an_unreachable_prefect_server_is_one_line_naming_it(data_dir: Path) -> None:
    from citadel.testing.prefect_server import free_port

    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = run_cli("index", str(REPO / "docs"), env={"PREFECT_API_URL": api})
    assert done.returncode == 2
    assert f"cannot reach the Prefect API at {api}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and len(done.stderr.strip().splitlines()) == 1


def test_drift_is_reported_by_doctor_and_status_and_repaired_by_verify(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch
) -> None:
    """The registry says 4 documents are indexed; the Qdrant server the settings now name has none."""
    from tests.support.qdrant_server import QdrantTestServer

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4)
    assert invoke("index", str(corpus), "--collection", collection_name).exit_code == 0
    with QdrantTestServer(tmp_path / "new-server") as server:
        monkeypatch.setenv("CITADEL_QDRANT_URL", server.url)
        doctor = invoke("doctor")
        said = " ".join(doctor.stdout.split())
        assert doctor.exit_code == 1
        assert f"FAIL collection {collection_name}" in said and "no such collection in the store" in said
        assert f"fix: citadel verify --repair --collection {collection_name}" in said

        status = invoke("status", "--json")
        entry = next(c for c in json.loads(status.stdout)["collections"] if c["collection"] == collection_name)
        assert (entry["drift"], entry["vectors"], entry["missing"]) == (True, 0, entry["chunks"])
        assert "does not match the registry" in " ".join(invoke("status").stderr.split())

        lost = invoke("search", "vector cache", "--collection", collection_name)
        assert lost.exit_code == 2 and "the vector store has lost it" in " ".join(lost.stderr.split())

        checked = invoke("verify", "--collection", collection_name, "--json")
        assert checked.exit_code == 1
        (report,) = json.loads(checked.stdout)
        assert (report["check"]["missing"], report["check"]["points"], report["check"]["drift"]) == (entry["chunks"], None, True)

        repaired = invoke("verify", "--repair", "--collection", collection_name)
        assert repaired.exit_code == 0, repaired.output
        assert "4 documents repaired" in " ".join(repaired.stdout.split())
        assert invoke("doctor").exit_code == 0
        hits = json.loads(invoke("search", "vector cache", "--collection", collection_name, "--json").stdout)
        assert hits, "the collection answers searches again"


def test_an_empty_query_is_refused(data_dir: Path) -> None:
    for query in ("", "   ", "?!"):
        result = invoke("search", query)
        assert result.exit_code == 2 and "give the words to search for" in result.stderr


def test_a_source_with_nothing_to_read_exits_1_and_says_why(data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    result = invoke("index", str(empty), "--collection", collection_name)
    assert result.exit_code == 1 and "found no documents" in result.stderr

    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = invoke("index", str(locked), "--collection", collection_name)
    assert result.exit_code == 1 and "cannot read" in result.stderr and "Permission denied" in result.stderr, result.output


def test_status_fits_80_columns_and_never_cuts_a_name(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    name = "citadel-hashing-demo-docs"
    write_corpus(tmp_path / "corpus", files=1)
    assert invoke("index", str(tmp_path / "corpus"), "--collection", name).exit_code == 0
    result = invoke("status")
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    assert any(name in line for line in lines), "a name that fits its column stays whole"
    assert any("wordllama-l2_supercat-256d" in line for line in lines)


def test_a_symlink_loop_is_named_as_one(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = invoke("index", str(tmp_path / "a"))
    assert result.exit_code == 2 and "is a symlink loop" in result.stderr


def test_doctor_shows_who_holds_the_embedding_slots_and_which_are_gone(
    data_dir: Path, tmp_path: Path, monkeypatch, prefect_api_url: str
) -> None:
    import asyncio

    from citadel.settings import Settings
    from tasks.limits import limit_name
    from tests.tasks.test_limits import _hold_a_slot_in_a_process, fresh_limit

    monkeypatch.setenv("CITADEL_EMBEDDER", "openai")
    settings = Settings()
    asyncio.run(fresh_limit(settings))
    holder = _hold_a_slot_in_a_process(settings, prefect_api_url, tmp_path)
    try:
        checks = {check["name"]: check for check in json.loads(invoke("doctor", "--json").stdout)}
        slots = checks["embedding slots"]
        assert slots["ok"], slots
        assert f"1 of 1 slots of '{limit_name(settings)}' in use" in slots["detail"]
        assert f"pid {holder.pid}" in slots["detail"]
    finally:
        holder.kill()
        holder.wait()
    result = invoke("doctor")
    said = " ".join(result.stdout.split())
    assert result.exit_code == 1
    assert f"FAIL embedding slots: 1 of 1 slots of '{limit_name(settings)}' in use; 1 held by holders that are gone" in said
    assert f"its process {holder.pid}" in said and "the next run that waits for a slot gives these back" in said


def test_search_shows_documents_by_their_best_chunk_and_every_chunk_when_asked(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    import asyncio

    from citadel.testing.corpus import index_with_own_backends

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "log.md").write_text("\n\n".join(f"Zebra sighting {n}: zebras crossed the river at dawn." for n in range(80)))
    (corpus / "note.txt").write_text("A short note: zebras seen once.")
    asyncio.run(index_with_own_backends(str(corpus), collection_name))
    documents = json.loads(invoke("search", "zebras crossed the river", "--collection", collection_name, "--limit", "2", "--json").stdout)
    chunks = json.loads(invoke("search", "zebras crossed the river", "--collection", collection_name, "--limit", "2", "--chunks",
                               "--json").stdout)
    assert sorted(Path(hit["document_id"]).name for hit in documents) == ["log.md", "note.txt"]
    assert [Path(hit["document_id"]).name for hit in chunks] == ["log.md", "log.md"]
