"""citadel workflow validate / run / status, on the embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def test_validate_reports_every_problem_with_its_location() -> None:
    result = runner.invoke(app, ["workflow", "validate", str(EXAMPLES / "invalid.yaml"), "--json"])
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    locations = {p["location"] for p in problems}
    assert {"steps[1].parameters.size", "steps[2].type", "steps[3].step_id", "steps[3].parameters.query"} <= locations
    assert any("cycle: a -> b -> a" in p["message"] for p in problems)

    ok = runner.invoke(app, ["workflow", "validate", str(EXAMPLES / "index_and_search.yaml"), "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["order"] == ["index", "search", "chunk", "embed"]


def test_validate_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["workflow", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2


def test_run_locally_waits_and_reports_outputs(data_dir: Path, tmp_path: Path) -> None:
    workflow = yaml.safe_load((EXAMPLES / "index_and_search.yaml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "crash.md").write_text("A run killed half way is resumed by running it again; nothing is duplicated.\n")
    (docs / "cache.md").write_text("The embedding cache keeps raw float32 vectors in Redis.\n")
    workflow["steps"][0]["parameters"]["source"] = str(docs)
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(workflow))

    result = runner.invoke(app, ["workflow", "run", str(path), "--local", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["state"] == "Completed" and report["workflow_id"] == "index-and-search"
    assert all(step["state"] == "Completed" for step in report["steps"].values())
    assert report["steps"]["index"]["output"]["added"] == 2
    assert report["steps"]["search"]["output"]["hits"]

    status = runner.invoke(app, ["workflow", "status", report["flow_run_id"]])
    assert status.exit_code == 0 and "index-and-search" in status.stdout and "Completed" in status.stdout
    missing = runner.invoke(app, ["workflow", "status", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 2
