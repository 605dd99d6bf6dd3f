"""The citadel command: output shapes, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from tests.support.corpus import write_corpus

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str):  # noqa: ANN201
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
    assert result.exit_code == 0 and "1." in result.stdout


def test_doctor_reports_unreachable_backends(data_dir: Path, monkeypatch) -> None:  # noqa: ANN001
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
    from tests.support.prefect_server import free_port

    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = run_cli("index", str(REPO / "docs"), env={"PREFECT_API_URL": api})
    assert done.returncode == 2
    assert f"cannot reach the Prefect API at {api}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and len(done.stderr.strip().splitlines()) == 1
