"""The documented examples run as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def test_custom_step_type_runs_from_yaml(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CITADEL_STEP_MODULES", "examples.custom_step")
    result = CliRunner().invoke(app, ["workflow", "run", "examples/workflows/word_count.yaml", "--local", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)["steps"]["count"]["output"]
    assert output["total"] == 12 and output["top"][0] == ["the", 3]


def test_unknown_step_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITADEL_STEP_MODULES", "no_such_module_here")
    result = CliRunner().invoke(app, ["workflow", "validate", str(REPO / "examples/workflows/word_count.yaml")])
    assert result.exit_code == 2 and "CITADEL_STEP_MODULES" in result.stderr


async def test_python_flow_composes_the_tasks(data_dir: Path, tmp_path: Path) -> None:
    from examples.python_flow import index_then_ask

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "retries.md").write_text("Retries are safe because every write is an upsert with a deterministic id.\n")
    (docs / "other.md").write_text("Grafana dashboards show throughput.\n")
    result = await index_then_ask(str(docs), "why are retries safe with deterministic ids", collection="examples")
    assert result["indexed"]["added"] == 2
    assert result["hits"][0]["document_id"] == str(docs / "retries.md")
